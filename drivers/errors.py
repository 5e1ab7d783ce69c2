"""Typed driver errors: every way a Modbus exchange can fail, folded into one exception class.

Callers (the gateway poller, pilectl) handle exactly one type, :class:`DriverError`, and branch on
its ``kind``. :func:`to_driver_error` is the single place that maps pymodbus exceptions, Modbus
exception responses (``isError()`` PDUs), codec errors and OS errors to a kind.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pymodbus.exceptions import (
    ConnectionException,
    MessageRegisterException,
    ModbusException,
    ModbusIOException,
    NotImplementedException,
    ParameterException,
)

from protocols.registers import CodecError

ErrorKind = Literal["timeout", "connection", "exception_response", "decode", "invalid"]

# Modbus application exception codes (Modbus Application Protocol v1.1b3, section 7)
EXCEPTION_CODE_NAMES: dict[int, str] = {
    0x01: "ILLEGAL_FUNCTION",
    0x02: "ILLEGAL_DATA_ADDRESS",
    0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SERVER_DEVICE_FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SERVER_DEVICE_BUSY",
    0x07: "NEGATIVE_ACKNOWLEDGE",
    0x08: "MEMORY_PARITY_ERROR",
    0x0A: "GATEWAY_PATH_UNAVAILABLE",
    0x0B: "GATEWAY_TARGET_FAILED_TO_RESPOND",
}

# exception codes that a repeat of the same request cannot fix
_PERMANENT_CODES = frozenset({0x01, 0x02, 0x03})


class DriverError(Exception):
    """A Modbus exchange with a device failed; ``kind`` says how."""

    def __init__(
        self, kind: ErrorKind, device: str, message: str, *, exception_code: int | None = None
    ) -> None:
        super().__init__(f"{device}: {kind}: {message}")
        self.kind: ErrorKind = kind
        self.device = device
        self.message = message
        self.exception_code = exception_code

    @property
    def retryable(self) -> bool:
        """Whether repeating the request may succeed (timeouts are never retried: fail fast)."""
        if self.kind in ("timeout", "invalid"):
            return False
        return not (self.kind == "exception_response" and self.exception_code in _PERMANENT_CODES)

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for status APIs and command results."""
        out: dict[str, object] = {"kind": self.kind, "device": self.device, "message": self.message}
        if self.exception_code is not None:
            out["exception_code"] = self.exception_code
        return out


class _ErrorResponse(Protocol):
    """The part of a pymodbus PDU that says whether it is a Modbus exception response."""

    function_code: int

    def isError(self) -> bool: ...


def exception_code_name(code: int) -> str:
    """``"ILLEGAL_DATA_ADDRESS (0x02)"`` for 2; unknown codes are shown in hex."""
    return f"{EXCEPTION_CODE_NAMES.get(code, 'UNKNOWN_EXCEPTION')} (0x{code:02X})"


def _from_response(device: str, response: _ErrorResponse) -> DriverError:
    code = getattr(response, "exception_code", None)
    function = response.function_code & 0x7F
    if not isinstance(code, int):
        return DriverError("decode", device, f"error response to function {function}: {response}")
    return DriverError(
        "exception_response",
        device,
        f"{exception_code_name(code)} in reply to function 0x{function:02X}",
        exception_code=code,
    )


def _from_modbus_exception(device: str, exc: ModbusException) -> DriverError:
    text = exc.string
    if isinstance(exc, ConnectionException):
        return DriverError("connection", device, text)
    if isinstance(exc, ModbusIOException) and "No response" in text:
        return DriverError("timeout", device, text)  # pymodbus's own response timeout
    if isinstance(exc, ParameterException | NotImplementedException | MessageRegisterException):
        return DriverError("invalid", device, text)
    return DriverError("decode", device, text)  # garbled, mismatched or undecodable reply


def to_driver_error(device: str, failure: BaseException | _ErrorResponse) -> DriverError:
    """Fold any failure of an exchange with ``device`` into a :class:`DriverError`.

    ``failure`` is an exception raised by pymodbus, asyncio, pyserial or the codec, or a pymodbus
    response whose ``isError()`` is true. A DriverError passes through unchanged.
    """
    if isinstance(failure, DriverError):
        return failure
    if not isinstance(failure, BaseException):
        return _from_response(device, failure)
    if isinstance(failure, ModbusException):
        return _from_modbus_exception(device, failure)
    if isinstance(failure, TimeoutError):
        return DriverError("timeout", device, str(failure) or "no response in time")
    if isinstance(failure, CodecError):
        return DriverError("decode", device, str(failure))
    if isinstance(failure, OSError):  # includes serial.SerialException and ConnectionError
        return DriverError("connection", device, f"{type(failure).__name__}: {failure}")
    if isinstance(failure, ValueError | TypeError | KeyError):
        return DriverError("invalid", device, f"{type(failure).__name__}: {failure}")
    return DriverError("decode", device, f"unexpected {type(failure).__name__}: {failure}")
