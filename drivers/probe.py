"""A short-lived Modbus client for a line or host that no gateway owns (``pilectl scan --device``).

Configured like the bus owner's client (:mod:`drivers.bus`): pymodbus does not retry and does not
reconnect on its own, the timeout is enforced here with ``asyncio.timeout`` (pymodbus's own sits
well beyond it), the RTU inter-frame silence is kept before every request, and every failure is a
:class:`~drivers.errors.DriverError`. One attempt per read: a scan wants to move on, not insist.
Never use it on a line a running gateway polls; ask the gateway (``POST /scan``) instead.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers.errors import DriverError, to_driver_error
from drivers.plan import MODBUS_MAX_READ
from drivers.specs import SerialTransport, TcpTransport
from drivers.timing import bits_per_char, t35_s

BACKSTOP_MARGIN_S = 1.0  # pymodbus's own timeout sits this far beyond ours


class LineProbe:
    """``async with LineProbe(transport, timeout_s) as probe: await probe.read(unit, address, count)``."""

    def __init__(self, transport: TcpTransport | SerialTransport, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0")
        self.transport, self.timeout_s = transport, timeout_s
        self._gap_s = 0.0
        if isinstance(transport, SerialTransport):
            bits = bits_per_char(transport.bytesize, transport.parity, transport.stopbits)
            self._gap_s = t35_s(transport.baudrate, bits)
        self._line_free_at = 0.0
        self._client = self._make_client()

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        t = self.transport
        common: dict[str, Any] = {
            "name": "probe",
            "timeout": self.timeout_s + BACKSTOP_MARGIN_S,
            "retries": 0,
            "reconnect_delay": 0,
        }
        if isinstance(t, TcpTransport):
            return AsyncModbusTcpClient(t.host, port=t.port, **common)
        return AsyncModbusSerialClient(
            t.device, baudrate=t.baudrate, bytesize=t.bytesize, parity=t.parity, stopbits=t.stopbits, **common
        )

    @property
    def where(self) -> str:
        t = self.transport
        return f"{t.host}:{t.port}" if isinstance(t, TcpTransport) else t.device

    async def __aenter__(self) -> LineProbe:
        await self._connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s + BACKSTOP_MARGIN_S):
                connected = await self._client.connect()
        except (TimeoutError, OSError) as exc:
            raise DriverError("connection", self.where, f"cannot open {self.where}: {exc}") from None
        if not connected:
            raise DriverError("connection", self.where, f"cannot open {self.where}")

    async def read(self, unit: int, address: int, count: int) -> list[int]:
        """``count`` holding registers from ``address`` of ``unit``; one attempt."""
        if not 1 <= count <= MODBUS_MAX_READ:
            raise DriverError("invalid", f"unit {unit}", f"count {count} outside 1..{MODBUS_MAX_READ}")
        if not self._client.connected:
            await self._connect()
        label = f"unit {unit}"
        if (wait_s := self._line_free_at - time.monotonic()) > 0:
            await asyncio.sleep(wait_s)  # the RTU silence between frames
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.read_holding_registers(address, count=count, device_id=unit)
        except TimeoutError:
            raise DriverError("timeout", label, f"no reply within {self.timeout_s:g} s") from None
        except Exception as exc:  # pymodbus, pyserial and OS errors alike
            raise to_driver_error(label, exc) from exc
        finally:
            self._line_free_at = time.monotonic() + self._gap_s
        if response.isError():
            raise to_driver_error(label, response)
        registers: list[int] = list(getattr(response, "registers", []))
        if len(registers) != count:
            raise DriverError("decode", label, f"asked {count} registers at {address}, got {len(registers)}")
        return registers
