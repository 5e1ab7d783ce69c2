"""free_port picks servers' ports below the kernel's ephemeral range, so that no outgoing
connection's source port (nor another port-0 bind) takes one between the pick and the bind."""

from __future__ import annotations

import socket

from pilegate.broker import _ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_and_free():
    low = _ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(20_000 <= p < low for p in ports)
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when picked
