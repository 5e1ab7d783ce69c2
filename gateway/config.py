"""Gateway configuration: TOML parsed once into frozen dataclasses and validated completely at load.

Every problem is collected and reported together, each prefixed by the entry it belongs to
(``bus[rtu0].baudrate: ...``), so an operator fixes a file in one pass. The key tables below are the
single source of defaults and help lines; ``config/gateway.example.toml`` documents the same keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilegate.settings import NUMBER as _NUM
from pilegate.settings import ConfigError as ConfigError  # re-exported for callers
from pilegate.settings import check as _check
from pilegate.settings import is_loopback_listen, parse_mqtt_url, read_secret, read_toml, unknown_tables
from pilegate.settings import take as _take
from protocols.maploader import MapError, get_map
from protocols.maploader import is_path as is_map_path
from protocols.regmodel import RegisterMap
from protocols.topics import TopicError, check_id

MAX_RTU_UNIT = 247  # Modbus serial line addresses
MAX_TCP_UNIT = 255  # Modbus TCP unit ids (many TCP devices answer only on 255)


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    client_id: str
    keepalive_s: int
    max_inflight: int


@dataclass(frozen=True)
class OutboxSettings:
    max_messages: int
    max_bytes: int
    max_age_s: float
    flush_interval_s: float


@dataclass(frozen=True)
class BusConfig:
    name: str
    transport: str  # "tcp" | "rtu"
    host: str | None
    port: int | None
    device: str | None
    baudrate: int
    bytesize: int
    parity: str
    stopbits: int
    timeout_s: float
    retries: int
    fail_after_cycles: int
    backoff_max_s: float
    turnaround_s: float


@dataclass(frozen=True)
class PileConfig:
    id: str
    bus: str
    unit: int
    map: str
    ports: int
    kind: str | None  # "fast" | "trickle"; None = read from the pile's identity
    max_registers: int
    max_gap: int
    phases: int | None = None  # None: the map's


@dataclass(frozen=True)
class GatewayConfig:
    id: str
    station: str
    data_dir: Path
    poll_period_s: float
    log_level: str
    log_format: str
    control_listen: str
    control_token_file: Path
    command_timeout_s: float
    mqtt: MqttSettings
    outbox: OutboxSettings
    buses: tuple[BusConfig, ...]
    piles: tuple[PileConfig, ...]

    def bus(self, name: str) -> BusConfig:
        return next(b for b in self.buses if b.name == name)

    def piles_on(self, bus: str) -> tuple[PileConfig, ...]:
        return tuple(p for p in self.piles if p.bus == bus)


# key -> (default, help). A default of ... means required.
GATEWAY_KEYS: dict[str, tuple[Any, str]] = {
    "id": (..., "gateway id, unique within the station (MQTT topic segment)"),
    "station": (..., "station id (MQTT topic segment)"),
    "data_dir": ("/var/lib/pilegate/gateway", "where the outbox database lives"),
    "poll_period_s": (1.0, "seconds between poll cycles of every bus"),
    "log_level": ("info", "debug | info | warning | error"),
    "log_format": ("auto", "auto (JSON unless on a terminal) | json | console"),
    "control_listen": ("127.0.0.1:8470", "loopback host:port of the local control API for pilectl"),
    "control_token_file": (
        None,
        "bearer token of the control API, created at start if missing; default control.token in data_dir",
    ),
    "command_timeout_s": (3.0, "how long a command may take to be confirmed by read-back"),
}
MQTT_KEYS: dict[str, tuple[Any, str]] = {
    "url": ("mqtt://127.0.0.1:1883", "broker URL, mqtt://host:port or mqtts://host:port"),
    "username": (None, "broker user of this gateway (see config/mosquitto)"),
    "password": (None, "broker password (prefer password_file)"),
    "password_file": (None, "file whose first line is the broker password"),
    "client_id": (None, "MQTT client id; default pilegate-gw-{station}-{id}"),
    "keepalive_s": (15, "MQTT keepalive; the last will fires after 1.5x this without traffic"),
    "max_inflight": (1000, "QoS 1 messages sent but not yet acknowledged, at most"),
}
OUTBOX_KEYS: dict[str, tuple[Any, str]] = {
    "max_messages": (1_000_000, "messages kept while the broker is unreachable"),
    "max_bytes": (512 * 2**20, "bytes of payload kept while the broker is unreachable"),
    "max_age_s": (7 * 86400, "telemetry older than this is dropped (events never are)"),
    "flush_interval_s": (0.1, "telemetry is written to the outbox in one transaction this often"),
}
BUS_KEYS: dict[str, tuple[Any, str]] = {
    "name": (..., "bus name, referenced by piles"),
    "transport": (..., "tcp | rtu"),
    "host": (None, "tcp: host of the pile or Modbus TCP gateway"),
    "port": (502, "tcp: port"),
    "device": (None, "rtu: serial device, e.g. /dev/ttyUSB0"),
    "baudrate": (19200, "rtu: bits per second"),
    "bytesize": (8, "rtu: data bits"),
    "parity": ("N", "rtu: N | E | O"),
    "stopbits": (1, "rtu: 1 | 2"),
    "timeout_s": (0.5, "per request; must be shorter than poll_period_s"),
    "retries": (1, "retries of a request that failed other than by timeout"),
    "fail_after_cycles": (2, "failed cycles before a pile is marked comm_fault"),
    "backoff_max_s": (30.0, "longest wait between attempts at a comm_fault pile"),
    "turnaround_s": (0.0, "rtu: extra silence between transactions for slow devices"),
}
PILE_KEYS: dict[str, tuple[Any, str]] = {
    "id": (..., "pile id, unique in the station (e.g. F1, T3)"),
    "bus": (..., "name of the bus the pile is on"),
    "unit": (1, "Modbus unit (device) id, unique on its bus: 1..247 on RTU, up to 255 on TCP"),
    "map": (
        "pilegate-sim-v1",
        "register map of the pile family: a shipped map's name, or a map file (relative to this file)",
    ),
    "ports": (1, "number of charging ports"),
    "kind": (None, "fast | trickle; default: read from the pile"),
    "phases": (None, "phases the pile charges on (1..3); default: the map's"),
    "max_registers": (125, "largest read the device accepts"),
    "max_gap": (16, "registers read through to merge two ranges into one request"),
}


def _check_id(problems: list[str], where: str, value: Any) -> None:
    if isinstance(value, str):
        try:
            check_id(where, value)
        except TopicError as exc:
            problems.append(str(exc))
    elif value is not None:
        problems.append(f"{where}: expected a string, got {value!r}")


def _parse_mqtt(
    raw: Mapping[str, Any], gw: Mapping[str, Any], problems: list[str], base: Path
) -> MqttSettings:
    m = _take(raw, MQTT_KEYS, "mqtt", problems)
    host, port, tls = parse_mqtt_url(m["url"], "mqtt.url", problems)
    password = read_secret(m["password"], m["password_file"], "mqtt.password_file", base, problems)
    _check(problems, "mqtt.keepalive_s", m["keepalive_s"], int, lambda v: 5 <= v <= 3600, "5..3600")
    _check(problems, "mqtt.max_inflight", m["max_inflight"], int, lambda v: 1 <= v <= 65535, "1..65535")
    client_id = m["client_id"] or f"pilegate-gw-{gw.get('station')}-{gw.get('id')}"
    return MqttSettings(
        host=host,
        port=port,
        tls=tls,
        username=m["username"],
        password=password,
        client_id=str(client_id),
        keepalive_s=m["keepalive_s"],
        max_inflight=m["max_inflight"],
    )


def _parse_outbox(raw: Mapping[str, Any], problems: list[str]) -> OutboxSettings:
    o = _take(raw, OUTBOX_KEYS, "outbox", problems)
    for key in ("max_messages", "max_bytes"):
        _check(problems, f"outbox.{key}", o[key], int, lambda v: v > 0, "positive")
    for key in ("max_age_s", "flush_interval_s"):
        _check(problems, f"outbox.{key}", o[key], _NUM, lambda v: v > 0, "positive")
    return OutboxSettings(**o)


def _parse_bus(raw: Any, i: int, poll_period_s: Any, problems: list[str]) -> BusConfig | None:
    if not isinstance(raw, dict):
        problems.append(f"bus[{i}]: expected a table")
        return None
    where = f"bus[{raw.get('name', i)}]"
    b = _take(raw, BUS_KEYS, where, problems)
    _check(problems, f"{where}.name", b["name"], str, bool, "a non-empty name")
    _check(problems, f"{where}.transport", b["transport"], str, lambda v: v in ("tcp", "rtu"), "tcp or rtu")
    if b["transport"] == "tcp" and not b["host"]:
        problems.append(f"{where}.host: required for transport tcp")
    if b["transport"] == "rtu" and not b["device"]:
        problems.append(f"{where}.device: required for transport rtu")
    _check(problems, f"{where}.port", b["port"], int, lambda v: 1 <= v <= 65535, "1..65535")
    _check(
        problems,
        f"{where}.baudrate",
        b["baudrate"],
        int,
        lambda v: v in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200),
        "a standard rate",
    )
    _check(problems, f"{where}.bytesize", b["bytesize"], int, lambda v: v in (7, 8), "7 or 8")
    _check(problems, f"{where}.parity", b["parity"], str, lambda v: v in ("N", "E", "O"), "N, E or O")
    _check(problems, f"{where}.stopbits", b["stopbits"], int, lambda v: v in (1, 2), "1 or 2")
    _check(problems, f"{where}.timeout_s", b["timeout_s"], _NUM, lambda v: v > 0, "positive")
    if (
        isinstance(b["timeout_s"], _NUM)
        and isinstance(poll_period_s, _NUM)
        and b["timeout_s"] >= poll_period_s
    ):
        problems.append(
            f"{where}.timeout_s: {b['timeout_s']} must be shorter than "
            f"gateway.poll_period_s ({poll_period_s})"
        )
    _check(problems, f"{where}.retries", b["retries"], int, lambda v: 0 <= v <= 5, "0..5")
    _check(
        problems, f"{where}.fail_after_cycles", b["fail_after_cycles"], int, lambda v: 1 <= v <= 100, "1..100"
    )
    _check(problems, f"{where}.backoff_max_s", b["backoff_max_s"], _NUM, lambda v: v > 0, "positive")
    _check(problems, f"{where}.turnaround_s", b["turnaround_s"], _NUM, lambda v: 0 <= v < 1, "0..1")
    return BusConfig(**b)


_PHASED: dict[tuple[str, int], RegisterMap] = {}


def pile_map(pile: PileConfig) -> RegisterMap:
    """The register map of ``pile``: its family's, with the pile's own phase count if it sets one
    (one object per map and phase count, so compiled decoders are shared)."""
    regmap = get_map(pile.map)
    if pile.phases is None or pile.phases == regmap.phases:
        return regmap
    key = (pile.map, pile.phases)
    if key not in _PHASED:
        _PHASED[key] = dataclasses.replace(regmap, phases=pile.phases)
    return _PHASED[key]


def _resolve_map(p: dict[str, Any], where: str, base: Path, problems: list[str]) -> RegisterMap | None:
    """Load the pile's map (a shipped name, or a path relative to the config file); a path is
    stored absolute so every later lookup finds the same file."""
    ref = p["map"]
    if not isinstance(ref, str) or not ref:
        problems.append(f"{where}.map: expected a map name or a path to a map file")
        return None
    if is_map_path(ref):
        ref = p["map"] = str((base / ref).resolve())
    try:
        return get_map(ref)
    except MapError as exc:
        label = f"{where}.map ({ref})" if is_map_path(ref) else f"{where}.map"
        problems.extend(f"{label}: {problem}" for problem in exc.problems)
        return None


def _parse_pile(raw: Any, i: int, base: Path, problems: list[str]) -> PileConfig | None:
    if not isinstance(raw, dict):
        problems.append(f"pile[{i}]: expected a table")
        return None
    where = f"pile[{raw.get('id', i)}]"
    p = _take(raw, PILE_KEYS, where, problems)
    _check_id(problems, f"{where}.id", p["id"])
    _check(problems, f"{where}.unit", p["unit"], int, lambda v: 1 <= v <= MAX_TCP_UNIT, f"1..{MAX_TCP_UNIT}")
    regmap = _resolve_map(p, where, base, problems)
    _check(problems, f"{where}.kind", p["kind"], str, lambda v: v in ("fast", "trickle"), "fast or trickle")
    _check(
        problems,
        f"{where}.max_registers",
        p["max_registers"],
        int,
        lambda v: 1 <= v <= 125,
        "1..125 (the Modbus limit)",
    )
    _check(problems, f"{where}.max_gap", p["max_gap"], int, lambda v: 0 <= v <= 125, "0..125")
    _check(problems, f"{where}.phases", p["phases"], int, lambda v: 1 <= v <= 3, "1, 2 or 3")
    max_ports = regmap.max_ports if regmap else 99
    _check(
        problems,
        f"{where}.ports",
        p["ports"],
        int,
        lambda v: 1 <= v <= max_ports,
        f"1..{max_ports} for map {regmap.name if regmap else p['map']}",
    )
    return PileConfig(**p)


def _cross_check(buses: list[BusConfig], piles: list[PileConfig], problems: list[str]) -> None:
    seen_bus: set[str] = set()
    for b in buses:
        if b.name in seen_bus:
            problems.append(f"bus[{b.name}]: duplicate bus name")
        seen_bus.add(b.name)
    seen_pile: set[str] = set()
    serial = {b.name for b in buses if b.transport == "rtu"}
    units: dict[tuple[str, int], str] = {}
    for p in piles:
        if p.id in seen_pile:
            problems.append(f"pile[{p.id}]: duplicate pile id")
        seen_pile.add(p.id)
        if p.bus not in seen_bus:
            problems.append(f"pile[{p.id}].bus: unknown bus {p.bus!r}")
        if p.bus in serial and isinstance(p.unit, int) and p.unit > MAX_RTU_UNIT:
            problems.append(f"pile[{p.id}].unit: {p.unit} is not an RTU address (1..{MAX_RTU_UNIT})")
        other = units.setdefault((p.bus, p.unit), p.id)
        if other != p.id:
            problems.append(f"pile[{p.id}].unit: unit {p.unit} on bus {p.bus!r} already used by pile {other}")
    if not piles:
        problems.append("pile: at least one [[pile]] is required")


def parse_config(
    data: Mapping[str, Any], source: str = "<config>", base: Path | None = None
) -> GatewayConfig:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    base = base or Path.cwd()
    unknown_tables(data, ("gateway", "mqtt", "outbox", "bus", "pile"), problems)
    gw = _take(data.get("gateway", {}), GATEWAY_KEYS, "gateway", problems)
    _check_id(problems, "gateway.id", gw["id"])
    _check_id(problems, "gateway.station", gw["station"])
    _check(
        problems,
        "gateway.poll_period_s",
        gw["poll_period_s"],
        _NUM,
        lambda v: 0.05 <= v <= 3600,
        "0.05..3600",
    )
    _check(
        problems,
        "gateway.log_level",
        gw["log_level"],
        str,
        lambda v: v in ("debug", "info", "warning", "error"),
        "debug|info|warning|error",
    )
    _check(
        problems,
        "gateway.log_format",
        gw["log_format"],
        str,
        lambda v: v in ("auto", "json", "console"),
        "auto|json|console",
    )
    _check(
        problems,
        "gateway.command_timeout_s",
        gw["command_timeout_s"],
        _NUM,
        lambda v: 0.1 <= v <= 60,
        "0.1..60",
    )
    _check(
        problems,
        "gateway.control_listen",
        gw["control_listen"],
        str,
        is_loopback_listen,
        "a loopback host:port (127.0.0.1:PORT)",
    )
    _check(problems, "gateway.control_token_file", gw["control_token_file"], str, bool, "a file path")
    mqtt = _parse_mqtt(data.get("mqtt", {}), gw, problems, base)
    outbox = _parse_outbox(data.get("outbox", {}), problems)
    raw_buses, raw_piles = data.get("bus", []), data.get("pile", [])
    if not isinstance(raw_buses, list) or not isinstance(raw_piles, list):
        problems.append("bus and pile must be arrays of tables ([[bus]], [[pile]])")
        raw_buses, raw_piles = [], []
    buses = [b for i, r in enumerate(raw_buses) if (b := _parse_bus(r, i, gw["poll_period_s"], problems))]
    piles = [p for i, r in enumerate(raw_piles) if (p := _parse_pile(r, i, base, problems))]
    _cross_check(buses, piles, problems)
    if problems:
        raise ConfigError(source, problems)
    data_dir = base / str(gw["data_dir"])
    return GatewayConfig(
        id=gw["id"],
        station=gw["station"],
        data_dir=data_dir,
        poll_period_s=float(gw["poll_period_s"]),
        log_level=gw["log_level"],
        log_format=gw["log_format"],
        control_listen=gw["control_listen"],
        control_token_file=(
            base / gw["control_token_file"] if gw["control_token_file"] else data_dir / "control.token"
        ),
        command_timeout_s=float(gw["command_timeout_s"]),
        mqtt=mqtt,
        outbox=outbox,
        buses=tuple(buses),
        piles=tuple(piles),
    )


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway TOML file. Relative paths in it are relative to the file."""
    path = Path(path)
    data = read_toml(path)
    return parse_config(data, str(path), path.parent.resolve())
