"""The systemd notifier never blocks its event loop, even when nobody reads its socket."""

from __future__ import annotations

import socket
import threading

from pilegate.sdnotify import Notifier


def test_pings_to_a_socket_nobody_reads_fail_instead_of_blocking(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)  # bound, never read: its queue fills up
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        sent: list[bool] = []

        def ping() -> None:
            sent.extend(notifier.notify("WATCHDOG=1") for _ in range(5000))

        pinging = threading.Thread(target=ping, daemon=True)
        pinging.start()
        pinging.join(10)
        assert not pinging.is_alive(), "a ping blocked on the full socket"
        assert sent[0] is True and sent[-1] is False  # delivered while there was room, then refused
        assert receiver.recv(64) == b"WATCHDOG=1"
