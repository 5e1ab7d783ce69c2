"""Pile I/O over Modbus TCP and RTU: read plans, typed errors, device health and the bus owner.

Only ``protocols`` is imported from the rest of pilegate. Start at :class:`drivers.bus.Bus`.
"""

from drivers.bus import Bus, BusSpec, DeviceSpec, PollResult, SerialTransport, TcpTransport
from drivers.errors import DriverError, to_driver_error
from drivers.health import DeviceHealth
from drivers.plan import ReadPlan, compile_read_plan, format_plan

__all__ = [
    "Bus",
    "BusSpec",
    "DeviceHealth",
    "DeviceSpec",
    "DriverError",
    "PollResult",
    "ReadPlan",
    "SerialTransport",
    "TcpTransport",
    "compile_read_plan",
    "format_plan",
    "to_driver_error",
]
