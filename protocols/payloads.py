"""JSON payloads of every topic in the v1 tree: encoding, and decoding that rejects bad input by name.

Payloads are compact UTF-8 JSON objects. Decoders accept unknown extra keys (a newer gateway may add
fields) but reject a missing or mistyped known field with a :class:`PayloadError` naming it.
``ts`` is always milliseconds since the Unix epoch (UTC) taken when the value was read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar, cast, get_args

from protocols.registers import FaultCode, PortState

GatewayState = Literal["online", "lost", "offline"]
PileState = Literal["online", "comm_fault", "faulted", "offline"]
EventType = Literal[
    "fault_raised", "fault_cleared", "plugged", "unplugged", "session_started", "session_stopped"
]
CommandOp = Literal["start", "stop", "limit"]
ResultStatus = Literal["accepted", "done", "rejected", "failed", "expired"]

PORT_STATES = tuple(s.name.lower() for s in PortState)
FAULT_NAMES = tuple(f.name.lower() for f in FaultCode)
MAX_PAYLOAD_BYTES = 64 * 1024
_TS_MIN_MS = 946_684_800_000  # 2000-01-01: anything earlier is a unit mistake (seconds, not ms)
_TS_MAX_MS = 4_102_444_800_000  # 2100-01-01


class PayloadError(ValueError):
    """A payload is not valid JSON for its topic; the message names the offending field."""


T = TypeVar("T")


def _loads(raw: bytes | str) -> dict[str, Any]:
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not UTF-8 JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # integers over 4300 digits, nesting past the stack
        raise PayloadError(f"JSON the decoder refuses: {type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # json.dumps builds one per call


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode()


def _get(
    obj: Mapping[str, Any],
    name: str,
    kind: type[T] | tuple[type, ...],
    *,
    optional: bool = False,
    check: Callable[[Any], bool] | None = None,
    expect: str = "",
) -> T:
    if name not in obj or obj[name] is None:
        if optional:
            return cast(T, None)
        raise PayloadError(f"missing field {name!r}")
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    is_bool = isinstance(value, bool)
    if (is_bool and bool not in kinds) or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise PayloadError(f"field {name!r} must be {names}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"field {name!r} must be finite, got {value!r}")
    if check is not None and not check(value):
        raise PayloadError(f"field {name!r}: {value!r} is not {expect or 'valid'}")
    return cast(T, value)


def _choice(obj: Mapping[str, Any], name: str, choices: tuple[str, ...], optional: bool = False) -> Any:
    return _get(
        obj, name, str, optional=optional, check=lambda v: v in choices, expect="one of " + "|".join(choices)
    )


def _ts(obj: Mapping[str, Any], name: str = "ts", optional: bool = False) -> int:
    return _get(
        obj,
        name,
        int,
        optional=optional,
        check=lambda v: _TS_MIN_MS <= v <= _TS_MAX_MS,
        expect="milliseconds since the epoch",
    )


def _fault(obj: Mapping[str, Any], optional: bool = False) -> str:
    """A fault name, or ``code_N`` for a vendor code the map does not name."""
    value = _get(
        obj,
        "fault",
        str,
        optional=optional,
        check=lambda v: v in FAULT_NAMES or (v.startswith("code_") and v[5:].isdigit()),
        expect="one of " + "|".join(FAULT_NAMES) + " or code_N",
    )
    return value or "none"


MAX_RATED_POWER_W = 10**7  # 10 MW: far above any charger (megawatt charging is 3.75 MW)
INT64_MAX = 2**63 - 1  # what a database's INTEGER / BIGINT column holds: a larger number is refused here


def _positive(obj: Mapping[str, Any], name: str) -> int:
    return _get(obj, name, int, check=lambda v: 1 <= v <= INT64_MAX, expect="an integer 1..2^63-1")


def _counter(obj: Mapping[str, Any], name: str) -> int | None:
    return _get(
        obj, name, int, optional=True, check=lambda v: 0 <= v <= INT64_MAX, expect="an integer 0..2^63-1"
    )


_NUM = (int, float)


@dataclass(slots=True)  # not frozen: frozen __init__ costs 1.5 µs a message in ingest
class Telemetry:
    """One port's reading. ``energy_Wh`` is the pile's cumulative 32-bit meter register.

    Treat it as immutable; it is not frozen only because ingest builds 20,000 of them a second.
    """

    ts: int
    session: int
    seq: int
    state: str
    voltage_V: float
    current_A: float
    power_W: float
    energy_Wh: int
    temperature_C: float
    fault: str
    heartbeat: int = 0
    active_limit_W: int | None = None
    active_target_Wh: int | None = None
    replayed: bool = False

    def to_json(self) -> bytes:
        # built by hand, not with asdict(): this runs for every port of every pile every cycle
        obj: dict[str, Any] = {
            "ts": self.ts,
            "session": self.session,
            "seq": self.seq,
            "state": self.state,
            "voltage_V": self.voltage_V,
            "current_A": self.current_A,
            "power_W": self.power_W,
            "energy_Wh": self.energy_Wh,
            "temperature_C": self.temperature_C,
            "fault": self.fault,
            "heartbeat": self.heartbeat,
            "active_limit_W": self.active_limit_W,
            "active_target_Wh": self.active_target_Wh,
        }
        if self.replayed:
            obj["replayed"] = True
        return _dumps(obj)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Telemetry:
        o = _loads(raw)
        fast = _telemetry_fast(cls, o)  # ingest's hot path: plain checks for good payloads
        if fast is not None:
            return fast
        return cls(
            ts=_ts(o),
            session=_positive(o, "session"),
            seq=_positive(o, "seq"),
            state=_choice(o, "state", PORT_STATES),
            voltage_V=_get(o, "voltage_V", _NUM, check=lambda v: 0 <= v <= 2000, expect="0..2000 V"),
            current_A=_get(o, "current_A", _NUM, check=lambda v: -1000 <= v <= 1000, expect="-1000..1000 A"),
            power_W=_get(o, "power_W", _NUM, check=lambda v: -2e6 <= v <= 2e6, expect="within ±2 MW"),
            energy_Wh=_get(
                o, "energy_Wh", int, check=lambda v: 0 <= v < 2**32, expect="a 32-bit meter value"
            ),
            temperature_C=_get(
                o, "temperature_C", _NUM, check=lambda v: -60 <= v <= 200, expect="-60..200 °C"
            ),
            fault=_fault(o),
            heartbeat=_counter(o, "heartbeat") or 0,
            active_limit_W=_counter(o, "active_limit_W"),
            active_target_Wh=_counter(o, "active_target_Wh"),
            replayed=_get(o, "replayed", bool, optional=True) or False,
        )


def _telemetry_fast(cls: type[Telemetry], o: dict[str, Any]) -> Telemetry | None:
    """A Telemetry when every field is plainly valid, else None (the caller explains why not).

    The range checks also reject NaN and infinities (every comparison with NaN is false).
    """
    try:
        ts, session, seq, energy = o["ts"], o["session"], o["seq"], o["energy_Wh"]
        v, a, w, t = o["voltage_V"], o["current_A"], o["power_W"], o["temperature_C"]
        state, fault = o["state"], o["fault"]
    except KeyError:
        return None
    heartbeat = o.get("heartbeat", 0)
    limit, target, replayed = o.get("active_limit_W"), o.get("active_target_Wh"), o.get("replayed", False)
    if not (
        type(ts) is int
        and _TS_MIN_MS <= ts <= _TS_MAX_MS
        and type(session) is int
        and 1 <= session <= INT64_MAX
        and type(seq) is int
        and 1 <= seq <= INT64_MAX
        and type(energy) is int
        and 0 <= energy < 2**32
        and type(v) in _NUM_TYPES
        and 0 <= v <= 2000
        and type(a) in _NUM_TYPES
        and -1000 <= a <= 1000
        and type(w) in _NUM_TYPES
        and -2e6 <= w <= 2e6
        and type(t) in _NUM_TYPES
        and -60 <= t <= 200
        and type(state) is str
        and state in _PORT_STATE_SET
        and type(fault) is str
        and fault in _FAULT_SET
        and type(heartbeat) is int
        and 0 <= heartbeat <= INT64_MAX
        and (limit is None or (type(limit) is int and 0 <= limit <= INT64_MAX))
        and (target is None or (type(target) is int and 0 <= target <= INT64_MAX))
        and type(replayed) is bool
    ):
        return None
    return cls(ts, session, seq, state, v, a, w, energy, t, fault, heartbeat, limit, target, replayed)


_NUM_TYPES = frozenset({int, float})
_PORT_STATE_SET = frozenset(PORT_STATES)
_FAULT_SET = frozenset(FAULT_NAMES)


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """Retained gateway status: the birth message, the last will, or the clean-stop status."""

    state: GatewayState
    session: int
    ts: int | None = None
    version: str | None = None
    piles: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"state": self.state, "session": self.session}
        if self.ts is not None:
            obj["ts"] = self.ts
        if self.version:
            obj["version"] = self.version
        if self.piles:
            obj["piles"] = list(self.piles)
        return _dumps(obj)

    @classmethod
    def from_json(cls, raw: bytes | str) -> GatewayStatus:
        o = _loads(raw)
        piles = _get(o, "piles", list, optional=True) or []
        if not all(isinstance(p, str) for p in piles):
            raise PayloadError("field 'piles' must be a list of pile ids")
        return cls(
            state=_choice(o, "state", get_args(GatewayState)),
            session=_positive(o, "session"),
            ts=_ts(o, optional=True),
            version=_get(o, "version", str, optional=True),
            piles=tuple(piles),
        )


@dataclass(frozen=True, slots=True)
class PileStatus:
    """Retained pile status with the identity read from the pile (when known)."""

    state: PileState
    ts: int
    kind: Literal["fast", "trickle"] | None = None
    ports: int | None = None
    rated_power_W: int | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    error: str | None = None

    def to_json(self) -> bytes:
        return _dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> PileStatus:
        o = _loads(raw)
        return cls(
            state=_choice(o, "state", get_args(PileState)),
            ts=_ts(o),
            kind=_choice(o, "kind", ("fast", "trickle"), optional=True),
            ports=_get(o, "ports", int, optional=True, check=lambda v: 1 <= v <= 99, expect="1..99"),
            rated_power_W=_get(
                o,
                "rated_power_W",
                int,
                optional=True,
                check=lambda v: 0 < v <= 10**7,
                expect="1..10,000,000 W",
            ),
            vendor=_get(o, "vendor", str, optional=True),
            model=_get(o, "model", str, optional=True),
            serial=_get(o, "serial", str, optional=True),
            firmware=_get(o, "firmware", str, optional=True),
            error=_get(o, "error", str, optional=True),
        )


@dataclass(frozen=True, slots=True)
class PileEvent:
    """A pile event: fault raised/cleared, plug, session start/stop, on one port."""

    ts: int
    session: int
    seq: int
    type: EventType
    port: int
    fault: str = "none"
    energy_Wh: int | None = None
    detail: str | None = None
    replayed: bool = False

    def to_json(self) -> bytes:
        obj = {k: v for k, v in asdict(self).items() if v is not None}
        if not self.replayed:
            del obj["replayed"]
        return _dumps(obj)

    @classmethod
    def from_json(cls, raw: bytes | str) -> PileEvent:
        o = _loads(raw)
        return cls(
            ts=_ts(o),
            session=_positive(o, "session"),
            seq=_positive(o, "seq"),
            type=_choice(o, "type", get_args(EventType)),
            port=_get(o, "port", int, check=lambda v: 1 <= v <= 99, expect="1..99"),
            fault=_fault(o, optional=True),
            energy_Wh=_get(
                o,
                "energy_Wh",
                int,
                optional=True,
                check=lambda v: 0 <= v < 2**32,
                expect="a 32-bit meter value",
            ),
            detail=_get(o, "detail", str, optional=True),
            replayed=_get(o, "replayed", bool, optional=True) or False,
        )


def _check_params(op: str, params: Mapping[str, Any]) -> None:
    allowed = {"start": {"energy_Wh", "power_W"}, "stop": set(), "limit": {"power_W"}}[op]
    unknown = set(params) - allowed
    if unknown:
        raise PayloadError(f"params of {op!r}: unknown {sorted(unknown)}; allowed {sorted(allowed)}")
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise PayloadError(f"params.{name} must be an integer 0..2**32-1, got {value!r}")
    if op == "limit" and "power_W" not in params:
        raise PayloadError("params.power_W is required for 'limit'")


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """A command to one port. ``params``: start {energy_Wh?, power_W?}, limit {power_W}, stop {}."""

    id: str
    op: CommandOp
    expires_at: int
    params: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _dumps(
            {"id": self.id, "op": self.op, "params": dict(self.params), "expires_at": self.expires_at}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> CommandMessage:
        o = _loads(raw)
        op = _choice(o, "op", get_args(CommandOp))
        params = _get(o, "params", dict, optional=True) or {}
        _check_params(op, params)
        return cls(
            id=_get(o, "id", str, check=lambda v: 1 <= len(v) <= 64, expect="1-64 characters"),
            op=op,
            params=params,
            expires_at=_ts(o, "expires_at"),
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The gateway's answer to a command, by command id."""

    id: str
    status: ResultStatus
    ts: int
    reason: str | None = None
    readback: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        return _dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> CommandResult:
        o = _loads(raw)
        return cls(
            id=_get(o, "id", str),
            status=_choice(o, "status", get_args(ResultStatus)),
            ts=_ts(o),
            reason=_get(o, "reason", str, optional=True),
            readback=_get(o, "readback", dict, optional=True),
        )
