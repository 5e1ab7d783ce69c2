"""paho-mqtt on the asyncio loop: the socket plumbing the gateway uplink and the central share.

paho's ``connect()`` resolves, opens TCP (and TLS) and sends CONNECT; it may block for seconds, so
it runs in a short-lived daemon thread and hands the result back to the loop. Afterwards the
socket is driven by the loop's reader/writer callbacks (each user registers its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt


async def connect_in_thread(client: mqtt.Client, host: str, port: int, keepalive_s: int,
                            name: str) -> None:
    """``client.connect(...)`` off the loop; raises what it raised. A cancelled wait closes it."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[None] = loop.create_future()

    def deliver(exc: BaseException | None) -> None:
        if opened.cancelled():
            close_socket(client)
        elif exc is not None:
            opened.set_exception(exc)
        else:
            opened.set_result(None)

    def work() -> None:
        exc: BaseException | None = None
        try:
            client.connect(host, port, keepalive_s)
        except Exception as err:
            exc = err
        try:
            loop.call_soon_threadsafe(deliver, exc)
        except RuntimeError:  # the loop is gone: nobody will use this socket
            close_socket(client)

    threading.Thread(target=work, name=name, daemon=True).start()
    await opened


def pending_tls_bytes(sock: Any) -> int:
    """Decrypted bytes an SSL socket holds that select() cannot see."""
    pending = getattr(sock, "pending", None)
    return int(pending()) if callable(pending) else 0


def forget_socket(loop: asyncio.AbstractEventLoop | None, sock: Any) -> None:
    """Stop watching ``sock`` on ``loop`` (if the loop still runs)."""
    if sock is not None and loop is not None and not loop.is_closed():
        loop.remove_reader(sock)
        loop.remove_writer(sock)


def detach_socket(client: mqtt.Client, loop: asyncio.AbstractEventLoop | None) -> None:
    """Unhook paho's socket callbacks, stop watching the socket, close it without DISCONNECT."""
    client.on_socket_close = None
    client.on_socket_register_write = None
    client.on_socket_unregister_write = None
    forget_socket(loop, client.socket())
    close_socket(client)


def close_socket(client: mqtt.Client) -> None:
    """Close the client's socket without a DISCONNECT (so the broker fires the will)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.close()
