"""Simulator configuration: which piles to serve, on which transport, at which time scale.

A TOML file (see ``config/sim.example.toml``) or the station parameters are parsed once into frozen
dataclasses. Everything is validated at load, cross-field rules too (duplicate pile ids, duplicate
tcp ports, duplicate units on a bus, unknown buses), and every problem is reported by entry name in
one :class:`SimConfigError`. A pile's ``map`` names a shipped register map or a map file (a path
relative to the config file); the map must load and be one the simulator can serve.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, cast

from protocols.maploader import is_path
from protocols.registers import MapError, RegisterMap, get_map

from .render import MapEncoder, MapNotServableError

PileKind = Literal["fast", "trickle"]
KINDS: tuple[PileKind, ...] = ("fast", "trickle")
MAX_RATED_POWER_W = 1_000_000  # keeps max_current_A (u16 x 0.1 A) in range at 222 V
MAX_METER_WH = 2**32 - 1
DEFAULT_MAP = "pilegate-sim-v1"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")  # ids appear in URLs and MQTT topics

T = TypeVar("T")


class SimConfigError(ValueError):
    """The simulator configuration is invalid; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid simulator config:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class SimPileSpec:
    """One simulated pile. ``tcp_port`` is None when the pile sits on ``serial_bus``; 0 = ephemeral."""

    id: str
    kind: PileKind
    rated_power_W: int
    ports: int = 1
    unit: int = 1
    tcp_port: int | None = 0
    serial_bus: str | None = None
    initial_energy_Wh: int = 0
    map: str = DEFAULT_MAP  # a shipped map's name, or a map file's path
    # fixed values of read-only registers the simulator has no model for, by the map's names
    registers: tuple[tuple[str, int | float | str], ...] = ()


@dataclass(frozen=True)
class SimSerialBusSpec:
    """One RS-485 line, simulated as a socat pty pair.

    ``gateway_path`` is where the gateway-side pty link is created; None = a fresh temporary dir.
    """

    name: str
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    gateway_path: str | None = None


@dataclass(frozen=True)
class SimConfig:
    """A whole simulator process. ``time_scale`` = simulated seconds per real second."""

    piles: tuple[SimPileSpec, ...]
    serial_buses: tuple[SimSerialBusSpec, ...] = ()
    time_scale: float = 1.0
    host: str = "127.0.0.1"
    control_port: int | None = None  # loopback HTTP control API; None = off, 0 = ephemeral
    ramp_s: float = 5.0  # simulated seconds from 0 to full power
    ambient_C: float = 25.0
    tick_s: float = 0.2  # real seconds between physics ticks


# ---------------------------------------------------------------------------------------------
# validation of built dataclasses (also used for configs built in code)


def _check_pile(pile: SimPileSpec, bus_names: set[str]) -> list[str]:
    where = f"pile {pile.id!r}"
    problems = []
    if not _ID_PATTERN.match(pile.id):
        problems.append(f"{where}: id must be 1-32 characters of letters, digits, '_', '-', '.'")
    if pile.kind not in KINDS:
        problems.append(f"{where}: kind {pile.kind!r} is not one of {list(KINDS)}")
    if not 1 <= pile.rated_power_W <= MAX_RATED_POWER_W:
        problems.append(f"{where}: rated_power_W {pile.rated_power_W} outside 1..{MAX_RATED_POWER_W}")
    regmap, map_problems = _pile_map(pile)
    problems += [f"{where}: {p}" for p in map_problems]
    if regmap is not None:
        problems += [f"{where}: {p}" for p in _check_fixed(pile, regmap)]
    max_ports = regmap.max_ports if regmap is not None else 4
    if not 1 <= pile.ports <= max_ports:
        problems.append(f"{where}: ports {pile.ports} outside 1..{max_ports} (map {pile.map})")
    if not 1 <= pile.unit <= 247:
        problems.append(f"{where}: unit {pile.unit} outside 1..247")
    if not 0 <= pile.initial_energy_Wh <= MAX_METER_WH:
        problems.append(f"{where}: initial_energy_Wh outside 0..{MAX_METER_WH}")
    problems += _check_pile_transport(pile, bus_names)
    return problems


def _pile_map(pile: SimPileSpec) -> tuple[RegisterMap | None, list[str]]:
    """The pile's register map, or the problems that keep the simulator from serving it."""
    try:
        regmap = get_map(pile.map)
        MapEncoder(regmap)
    except MapError as exc:
        return None, [f"map {pile.map}: {p}" for p in exc.problems]
    except MapNotServableError as exc:
        return None, [str(exc)]
    return regmap, []


FIXABLE_SECTIONS = ("telemetry", "readback")
NOT_FIXABLE = ("state", "fault")  # the physics owns them (inject faults through the control API)


def _check_fixed(pile: SimPileSpec, regmap: RegisterMap) -> list[str]:
    problems = []
    for name, value in pile.registers:
        found = regmap.fields_by_name.get(name)
        if found is None or found[0].kind not in FIXABLE_SECTIONS or name in NOT_FIXABLE:
            problems.append(
                f"registers.{name}: not a telemetry or read-back register of map {regmap.name} "
                f"that the simulator may fix (state and fault follow the physics)"
            )
        elif isinstance(value, bool) or not isinstance(value, int | float | str):
            problems.append(f"registers.{name}: expected a number or text, got {value!r}")
    return problems


def _check_pile_transport(pile: SimPileSpec, bus_names: set[str]) -> list[str]:
    where = f"pile {pile.id!r}"
    if pile.serial_bus is not None:
        if pile.tcp_port is not None:
            return [f"{where}: give either serial_bus or tcp_port, not both"]
        if pile.serial_bus not in bus_names:
            return [f"{where}: serial_bus {pile.serial_bus!r} is not a configured serial bus"]
        return []
    if pile.tcp_port is None:
        return [f"{where}: needs a tcp_port (0 = ephemeral) or a serial_bus"]
    if not 0 <= pile.tcp_port <= 65535:
        return [f"{where}: tcp_port {pile.tcp_port} outside 0..65535"]
    return []


def _check_bus(bus: SimSerialBusSpec) -> list[str]:
    where = f"serial bus {bus.name!r}"
    problems = []
    if not _ID_PATTERN.match(bus.name):
        problems.append(f"{where}: name must be 1-32 characters of letters, digits, '_', '-', '.'")
    if bus.baudrate <= 0:
        problems.append(f"{where}: baudrate {bus.baudrate} must be positive")
    if bus.parity not in ("N", "E", "O"):
        problems.append(f"{where}: parity {bus.parity!r} is not one of N, E, O")
    if bus.stopbits not in (1, 2):
        problems.append(f"{where}: stopbits {bus.stopbits} is not 1 or 2")
    if bus.bytesize not in (7, 8):
        problems.append(f"{where}: bytesize {bus.bytesize} is not 7 or 8")
    return problems


def _duplicates(items: list[T]) -> list[T]:
    seen: set[T] = set()
    dup: list[T] = []
    for item in items:
        if item in seen and item not in dup:
            dup.append(item)
        seen.add(item)
    return dup


def _check_cross(config: SimConfig) -> list[str]:
    piles, buses = config.piles, config.serial_buses
    problems = [f"duplicate pile id {d!r}" for d in _duplicates([p.id for p in piles])]
    problems += [f"duplicate serial bus {d!r}" for d in _duplicates([b.name for b in buses])]
    tcp_ports = [p.tcp_port for p in piles if p.serial_bus is None and p.tcp_port]
    problems += [f"tcp_port {d} used by more than one pile" for d in _duplicates(tcp_ports)]
    for bus in buses:
        on_bus = [p for p in piles if p.serial_bus == bus.name]
        if not on_bus:
            problems.append(f"serial bus {bus.name!r} has no piles")
        problems += [
            f"serial bus {bus.name!r}: unit {d} used by more than one pile"
            for d in _duplicates([p.unit for p in on_bus])
        ]
    return problems


def _check_globals(config: SimConfig) -> list[str]:
    problems = []
    if not config.piles:
        problems.append("no piles configured")
    if not config.time_scale > 0:
        problems.append(f"time_scale {config.time_scale} must be > 0")
    if config.control_port is not None and not 0 <= config.control_port <= 65535:
        problems.append(f"control_port {config.control_port} outside 0..65535")
    if not config.ramp_s >= 0:
        problems.append(f"ramp_s {config.ramp_s} must be >= 0")
    if not 0 < config.tick_s <= 5:
        problems.append(f"tick_s {config.tick_s} outside (0, 5]")
    if not -40 <= config.ambient_C <= 60:
        problems.append(f"ambient_C {config.ambient_C} outside -40..60")
    return problems


def config_problems(config: SimConfig) -> list[str]:
    """Every problem of an already built config (empty when it is valid)."""
    bus_names = {b.name for b in config.serial_buses}
    problems = _check_globals(config)
    for bus in config.serial_buses:
        problems += _check_bus(bus)
    for pile in config.piles:
        problems += _check_pile(pile, bus_names)
    return problems + _check_cross(config)


def validate_sim_config(config: SimConfig) -> SimConfig:
    """``config`` itself, or :class:`SimConfigError` listing every problem."""
    problems = config_problems(config)
    if problems:
        raise SimConfigError(problems)
    return config


# ---------------------------------------------------------------------------------------------
# parsing raw TOML tables


class _Reader:
    """Typed access to one raw TOML table that records problems instead of raising."""

    def __init__(self, table: Mapping[str, object], where: str, problems: list[str]) -> None:
        self.table, self.where, self.problems = table, where, problems
        self.used: set[str] = set()

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.problems.append(f"{self.where}: {key} must be {names}, got {value!r}")
            return default
        return cast(T, value)

    def finish(self) -> None:
        for key in sorted(set(self.table) - self.used):
            self.problems.append(f"{self.where}: unknown key {key!r}")


def _tables(raw: Mapping[str, object], key: str, problems: list[str]) -> list[Mapping[str, object]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(f"{key} must be an array of tables ([[{key}]])")
        return []
    return cast(list[Mapping[str, object]], value)


def _map_ref(ref: str, base_dir: Path | None) -> str:
    """A map file's path made absolute against the config file's directory; names unchanged."""
    if base_dir is None or not is_path(ref) or Path(ref).is_absolute():
        return ref
    return str(base_dir / ref)


def _parse_pile(
    table: Mapping[str, object], index: int, problems: list[str], base_dir: Path | None = None
) -> SimPileSpec:
    pile_id = table.get("id")
    where = f"pile {pile_id!r}" if isinstance(pile_id, str) else f"piles[{index}]"
    r = _Reader(table, where, problems)
    if "id" not in table:
        problems.append(f"{where}: id is required")
    if "kind" not in table or "rated_power_W" not in table:
        problems.append(f"{where}: kind and rated_power_W are required")
    bus = r.get("serial_bus", (str, type(None)), None)
    spec = SimPileSpec(
        id=r.get("id", str, f"piles[{index}]"),
        kind=cast(PileKind, r.get("kind", str, "fast")),
        rated_power_W=r.get("rated_power_W", int, 1),
        ports=r.get("ports", int, 1),
        unit=r.get("unit", int, 1),
        tcp_port=r.get("tcp_port", int, None if bus is not None else 0),
        serial_bus=bus,
        initial_energy_Wh=r.get("initial_energy_Wh", int, 0),
        map=_map_ref(r.get("map", str, DEFAULT_MAP), base_dir),
        registers=tuple(r.get("registers", dict, {}).items()),
    )
    r.finish()
    return spec


def _parse_bus(table: Mapping[str, object], index: int, problems: list[str]) -> SimSerialBusSpec:
    name = table.get("name")
    where = f"serial bus {name!r}" if isinstance(name, str) else f"serial_buses[{index}]"
    r = _Reader(table, where, problems)
    if "name" not in table:
        problems.append(f"{where}: name is required")
    spec = SimSerialBusSpec(
        name=r.get("name", str, f"serial_buses[{index}]"),
        baudrate=r.get("baudrate", int, 19200),
        parity=r.get("parity", str, "N"),
        stopbits=r.get("stopbits", int, 1),
        bytesize=r.get("bytesize", int, 8),
        gateway_path=r.get("gateway_path", (str, type(None)), None),
    )
    r.finish()
    return spec


def parse_sim_config(raw: Mapping[str, object], base_dir: Path | None = None) -> SimConfig:
    """A validated :class:`SimConfig` from a parsed TOML document; map file paths are relative
    to ``base_dir`` (the config file's directory)."""
    problems: list[str] = []
    r = _Reader(raw, "config", problems)
    r.used |= {"piles", "serial_buses"}
    buses = tuple(_parse_bus(t, i, problems) for i, t in enumerate(_tables(raw, "serial_buses", problems)))
    tables = _tables(raw, "piles", problems)
    piles = tuple(_parse_pile(t, i, problems, base_dir) for i, t in enumerate(tables))
    number = (int, float)
    config = SimConfig(
        piles=piles,
        serial_buses=buses,
        time_scale=float(r.get("time_scale", number, 1.0)),
        host=r.get("host", str, "127.0.0.1"),
        control_port=r.get("control_port", (int, type(None)), None),
        ramp_s=float(r.get("ramp_s", number, 5.0)),
        ambient_C=float(r.get("ambient_C", number, 25.0)),
        tick_s=float(r.get("tick_s", number, 0.2)),
    )
    r.finish()
    problems += config_problems(config)
    if problems:
        raise SimConfigError(problems)
    return config


def _read_toml(path: str | Path) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SimConfigError([f"cannot read {path}: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SimConfigError([f"{path} is not valid TOML: {exc}"]) from exc


def load_sim_config(path: str | Path) -> SimConfig:
    """The simulator config in the TOML file at ``path``; :class:`SimConfigError` if invalid."""
    return parse_sim_config(_read_toml(path), Path(path).parent)


# ---------------------------------------------------------------------------------------------
# station parameters -> one TCP pile per charging point

STATION_DEFAULTS: dict[str, int | float] = {
    "FastChargingPileNum": 2,
    "TrickleChargingPileNum": 3,
    "fast_power_kw": 30,
    "slow_power_kw": 10,
}


def _station_value(
    params: Mapping[str, object], key: str, ok: Callable[[float], bool], problems: list[str]
) -> float:
    value = params.get(key, STATION_DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
        problems.append(f"station parameter {key}: invalid value {value!r}")
        return STATION_DEFAULTS[key]
    return value


def _station_numbers(params: Mapping[str, object]) -> tuple[int, int, int, int]:
    problems: list[str] = []
    fast_n = _station_value(params, "FastChargingPileNum", lambda v: v >= 0 and v == int(v), problems)
    slow_n = _station_value(params, "TrickleChargingPileNum", lambda v: v >= 0 and v == int(v), problems)
    fast_kw = _station_value(params, "fast_power_kw", lambda v: 0 < v <= 1000, problems)
    slow_kw = _station_value(params, "slow_power_kw", lambda v: 0 < v <= 1000, problems)
    if not problems and fast_n + slow_n == 0:
        problems.append("station parameters give no piles (FastChargingPileNum + TrickleChargingPileNum = 0)")
    if problems:
        raise SimConfigError(problems)
    return int(fast_n), int(slow_n), round(fast_kw * 1000), round(slow_kw * 1000)


def station_sim_config(
    params_path_or_mapping: str | Path | Mapping[str, object],
    *,
    time_scale: float = 1.0,
    first_tcp_port: int = 0,
    host: str = "127.0.0.1",
) -> SimConfig:
    """Fast piles F1..Fn then trickle piles T1..Tn from the station parameters, one TCP port each.

    Ports are ``first_tcp_port + i`` in that order, or all ephemeral when ``first_tcp_port`` is 0.
    Only the keys FastChargingPileNum, TrickleChargingPileNum, fast_power_kw and slow_power_kw
    (top level) are read; the station's other parameters are ignored here.
    """
    if isinstance(params_path_or_mapping, Mapping):
        params = params_path_or_mapping
    else:
        params = _read_toml(params_path_or_mapping)
    fast_n, slow_n, fast_W, slow_W = _station_numbers(params)
    ids = [("F", i, "fast", fast_W) for i in range(1, fast_n + 1)]
    ids += [("T", i, "trickle", slow_W) for i in range(1, slow_n + 1)]
    piles = tuple(
        SimPileSpec(
            id=f"{prefix}{n}",
            kind=cast(PileKind, kind),
            rated_power_W=power_W,
            tcp_port=first_tcp_port + index if first_tcp_port else 0,
        )
        for index, (prefix, n, kind, power_W) in enumerate(ids)
    )
    config = SimConfig(piles=piles, time_scale=time_scale, host=host)
    return validate_sim_config(config)
