"""Dashboard streams of a station another central instance runs, passed through to that instance.

A station's live hub lives in the instance that runs the station (its lease holder), and a stream
ticket is only known to the hub that issued it. Behind a balancer without stickiness a page may
reach any instance, so an instance asked for the ticket or the stream of a station it does not run
passes the request to the one that does and relays the answer: the ticket's JSON as it came, the
stream byte for byte until either side ends. When the station moves (a hand-over, a kill), the
relayed stream ends with the old owner's, the page asks for a new ticket, and that goes to the new
owner. The owner is found by who holds the station's lease (``central/adapters/lease.py:
owner_url``), at the URL it announced (``[http] advertise_url``).

A relayed request carries ``X-Pilegate-Relayed``; an instance never relays such a request again (a
stale or wrong URL could otherwise send it round in a loop): it answers 503 and the page retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from central.adapters.lease import owner_url
from central.web.errors import ApiError
from central.web.live import HEARTBEAT_S, SSE_HEADERS
from central.web.middleware import store_of

log = structlog.get_logger(__name__)

RELAYED = "X-Pilegate-Relayed"
CONNECT_TIMEOUT_S = 3.0
TICKET_TIMEOUT_S = 10.0
STREAM_SILENCE_S = HEARTBEAT_S + 15  # the owner's keep-alives come every HEARTBEAT_S


def not_running(code: str, why: str) -> ApiError:
    return ApiError(503, "STATION_NOT_RUNNING", f"station {code}: {why}; try again shortly")


class PeerStreams:
    """The HTTP client that relays dashboard requests to the instance running their station."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._relaying: set[aiohttp.ClientResponse] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        )

    def end_streams(self) -> None:
        """End every relayed stream (the server is shutting down; pages will reconnect)."""
        for upstream in list(self._relaying):
            upstream.close()

    async def close(self) -> None:
        self.end_streams()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _owner(self, request: web.Request, code: str) -> tuple[aiohttp.ClientSession, str]:
        if request.headers.get(RELAYED) or self._session is None:
            raise not_running(code, "this central does not run it, and the request was relayed here")
        url = await store_of(request).read(lambda db: owner_url(db, code))
        if url is None:
            raise not_running(code, "no central instance runs it right now")
        return self._session, url

    async def ticket(self, request: web.Request, code: str, body: bytes) -> web.Response:
        """The owner's answer to the same ticket request."""
        session, owner = await self._owner(request, code)
        headers = {
            "Authorization": request.headers.get("Authorization", ""),
            "Content-Type": "application/json",
            RELAYED: "1",
        }
        try:
            async with session.post(
                f"{owner}/dashboard/ticket",
                params={"station": code},
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=TICKET_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S),
            ) as upstream:
                return await _as_answered(upstream)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("dashboard ticket relay failed", station=code, owner=owner, error=str(exc))
            raise not_running(code, "the central instance that runs it cannot be reached") from None

    async def stream(self, request: web.Request, code: str) -> web.StreamResponse:
        """The owner's stream of the same ticket (or the public board), relayed as it comes."""
        session, owner = await self._owner(request, code)
        params = {"station": code, **({"ticket": t} if (t := request.query.get("ticket")) else {})}
        try:
            upstream = await session.get(
                f"{owner}/dashboard/stream",
                params=params,
                headers={RELAYED: "1"},
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=STREAM_SILENCE_S
                ),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("dashboard stream relay failed", station=code, owner=owner, error=str(exc))
            raise not_running(code, "the central instance that runs it cannot be reached") from None
        self._relaying.add(upstream)
        try:
            if upstream.status != 200:  # a refused ticket (401), the owner's own 503: as it answered
                return await _as_answered(upstream)
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass  # either side ended (the owner stopped or went silent, the page left): so does this
            return response
        finally:
            self._relaying.discard(upstream)
            upstream.close()


async def _as_answered(upstream: aiohttp.ClientResponse) -> web.Response:
    """The owner's answer, status, body and content type unchanged."""
    body = await upstream.read()
    content_type = upstream.headers.get("Content-Type", "application/json")
    return web.Response(status=upstream.status, body=body, headers={"Content-Type": content_type})


PEERS = web.AppKey("dashboard_peer_streams", PeerStreams)


async def peer_streams(app: web.Application) -> AsyncIterator[None]:
    """The app's :class:`PeerStreams`, for as long as it runs (a cleanup context)."""
    peers = app[PEERS] = PeerStreams()
    await peers.start()
    yield
    await peers.close()
