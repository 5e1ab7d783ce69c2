"""One central per database: a second central on a held database refuses to start, naming the
database and the holder; the lock dies with its holder (kill -9 leaves no stale lock)."""

from __future__ import annotations

import signal

from tests.e2e.harness import free_port, spawn, start_central, wait_until


def test_a_second_central_on_the_same_database_refuses_and_kill_9_frees_it(tmp_path):
    mqtt_port = free_port()  # no broker: the central keeps retrying, its HTTP side still serves
    first = start_central(tmp_path, mqtt_port)
    try:
        second = spawn(
            "central-2", ["central", "--config", str(first.config_path), "--port", str(free_port())], tmp_path
        )
        second.popen.wait(60)
        assert second.popen.returncode == 2
        message = second.log()
        assert "central.db" in message and "in use by another central" in message
        assert f"pid {first.proc.popen.pid}" in message and "host" in message
        assert first.answering()

        first.proc.stop(signal.SIGKILL)
        third = first.restart(tmp_path)  # no stale lock after kill -9
        try:
            assert third.answering()
        finally:
            third.proc.stop()
    finally:
        first.proc.stop()


def test_the_lock_is_released_by_a_clean_stop(tmp_path):
    first = start_central(tmp_path, free_port())
    assert first.proc.stop() == 0
    again = first.restart(tmp_path)
    try:
        wait_until(again.answering, 30, "central HTTP", again.proc)
    finally:
        again.proc.stop()
