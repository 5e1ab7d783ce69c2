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
from drivers.plan import MODBUS_MAX_BITS, MODBUS_MAX_READ
from drivers.specs import SerialTransport, TcpTransport
from drivers.timing import bits_per_char, t35_s

BACKSTOP_MARGIN_S = 1.0  # pymodbus's own timeout sits this far beyond ours
READS = {  # function code -> (pymodbus client method, reply attribute)
    1: ("read_coils", "bits"),
    2: ("read_discrete_inputs", "bits"),
    3: ("read_holding_registers", "registers"),
    4: ("read_input_registers", "registers"),
}


class LineProbe:
    """``async with LineProbe(transport, timeout_s) as probe: await probe.read(unit, address, count, 3)``."""

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

    async def read(self, unit: int, address: int, count: int, function: int = 3) -> list[int]:
        """``count`` registers (or 0/1 bits for functions 1 and 2) from ``address`` of ``unit``;
        one attempt. ``function``: 3 holding, 4 input, 1 coils, 2 discrete inputs."""
        method, attribute = _read_method(unit, count, function)
        if not self._client.connected:
            await self._connect()
        label = f"unit {unit}"
        if (wait_s := self._line_free_at - time.monotonic()) > 0:
            await asyncio.sleep(wait_s)  # the RTU silence between frames
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await getattr(self._client, method)(address, count=count, device_id=unit)
        except TimeoutError:
            raise DriverError("timeout", label, f"no reply within {self.timeout_s:g} s") from None
        except Exception as exc:  # pymodbus, pyserial and OS errors alike
            raise to_driver_error(label, exc) from exc
        finally:
            self._line_free_at = time.monotonic() + self._gap_s
        if response.isError():
            raise to_driver_error(label, response)
        values = [int(v) for v in getattr(response, attribute, [])]
        if attribute == "bits":  # replies pad bits to whole bytes
            values = values[:count]
        if len(values) != count:
            raise DriverError("decode", label, f"asked {count} {attribute} at {address}, got {len(values)}")
        return values


def _read_method(unit: int, count: int, function: int) -> tuple[str, str]:
    """The pymodbus client method and reply attribute of read ``function``; DriverError if the
    function is not a read or ``count`` is more than one request carries."""
    if function not in READS:
        raise DriverError("invalid", f"unit {unit}", f"function {function} is not a read (1-4)")
    method, attribute = READS[function]
    limit = MODBUS_MAX_BITS if attribute == "bits" else MODBUS_MAX_READ
    if not 1 <= count <= limit:
        raise DriverError("invalid", f"unit {unit}", f"count {count} outside 1..{limit}")
    return method, attribute
