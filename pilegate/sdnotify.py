"""systemd's service notification protocol, in a few lines: ``READY=1`` once a daemon serves,
``WATCHDOG=1`` from its event loop, ``STOPPING=1`` as it stops.

systemd (``Type=notify``) names a unix datagram socket in ``NOTIFY_SOCKET`` (a leading ``@`` is an
abstract socket) and, with ``WatchdogSec``, the watchdog period in ``WATCHDOG_USEC``. Without
``NOTIFY_SOCKET`` every call does nothing, so daemons call it unconditionally. The watchdog is fed by
a task of the daemon's asyncio loop: when the loop is stuck the pings stop and systemd restarts the
service.
"""

from __future__ import annotations

import asyncio
import os
import socket

DEFAULT_WATCHDOG_S = 10.0  # ping period when systemd gave no watchdog period


class Notifier:
    """Sends notification lines to the socket ``NOTIFY_SOCKET`` names (none: a no-op)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_enabled = bool(self.address) and (not pid or pid == str(os.getpid()))
        # ping at half the period systemd waits for, as sd_watchdog_enabled(3) advises
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else DEFAULT_WATCHDOG_S

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=value``) as one datagram; False when there is no socket or it fails.

        Never blocks: it is called from the event loop, and a receiver that stopped reading (a
        supervisor that is not systemd) would otherwise stall the daemon once its queue is full."""
        if not self.address:
            return False
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(socket.AF_UNIX, kind) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self.address)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> bool:
        """The daemon serves: systemd considers the start finished."""
        return self.notify("READY=1", f"MAINPID={os.getpid()}", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def feed_watchdog(self) -> None:
        """Ping the watchdog from this event loop until cancelled (returns at once without one)."""
        if not self.watchdog_enabled:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)
