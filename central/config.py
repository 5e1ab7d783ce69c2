"""Central service configuration: TOML parsed once into frozen dataclasses, validated completely.

Station parameters come from ``[station]`` (inline keys as in ``config/station.example.toml``) or
from ``params_file``: those of the default station (``[central] station``). Further stations the
central runs are ``[stations.CODE]`` tables (``name``, and ``params_file`` or inline parameter keys
as in ``[station]``; CODE is the station's MQTT ``{station}``). The database is ``database``
(``sqlite:///path`` or ``postgresql://...``), by default ``central.db`` in ``data_dir``. Every
problem is reported together by entry name, as for the gateway.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from central.application.payments import DEFAULT_TOLERANCE_S, PaymentSettings
from central.domain.orders import PROVIDERS, PaymentMethod
from central.domain.params import StationParams, StationParamsError, params_from_mapping
from pilegate.settings import (
    NUMBER,
    ConfigError,
    check,
    parse_mqtt_url,
    read_secret,
    read_toml,
    take,
    unknown_tables,
)
from protocols.topics import TopicError, check_id

CENTRAL_KEYS: dict[str, tuple[Any, str]] = {
    "station": ("station1", "MQTT station id: the {station} of pilegate/v1/{station}/..."),
    "station_name": ("Charging station", "display name of the station record"),
    "data_dir": ("/var/lib/pilegate/central", "where central.db lives (unless database says otherwise)"),
    "database": (
        None,
        "sqlite:///path (relative to this file; sqlite:////abs/path) or postgresql://user@host:port/db; "
        "default sqlite in data_dir/central.db",
    ),
    "time_scale": (1.0, "station seconds per real second (the demo runs faster than life)"),
    "log_level": ("info", "debug | info | warning | error"),
    "log_format": ("auto", "auto (JSON unless on a terminal) | json | console"),
    "telemetry_retention_days": (30, "raw telemetry older than this is pruned (bills keep theirs)"),
    "instance": (
        None,
        "this central's name among the centrals sharing a PostgreSQL database (central_instances); "
        "default hostname-httpport",
    ),
}
HTTP_KEYS: dict[str, tuple[Any, str]] = {
    "host": ("127.0.0.1", "address the REST APIs listen on"),
    "port": (5045, "port of the REST APIs and the dashboard"),
    "trusted_proxies": ([], "reverse proxies (addresses or networks) whose X-Forwarded-For names the client"),
    "metrics": ("token", "GET /metrics: token (a staff token or the metrics token) | open | off"),
    "metrics_token_file": (None, "file whose first line is a bearer token that may read /metrics"),
    "advertise_url": (
        None,
        "where the other centrals on one PostgreSQL reach this one (they pass it dashboard streams of "
        "its stations); default http://HOST:PORT, this machine's name for a wildcard host",
    ),
}
METRICS_MODES = ("token", "open", "off")
MIN_METRICS_TOKEN_LEN = 16  # a shorter token is guessable
DEFAULT_CLIENT_ID = "pilegate-central"
MQTT_KEYS: dict[str, tuple[Any, str]] = {
    "url": ("mqtt://127.0.0.1:1883", "broker URL, mqtt://host:port or mqtts://host:port"),
    "username": (None, "broker user of the central service (see config/mosquitto)"),
    "password": (None, "broker password (prefer password_file)"),
    "password_file": (None, "file whose first line is the broker password"),
    "client_id": (
        DEFAULT_CLIENT_ID,
        "MQTT client id (on PostgreSQL the default is pilegate-central-<instance>: one per central)",
    ),
    "keepalive_s": (15, "MQTT keepalive in seconds"),
}
INGEST_KEYS: dict[str, tuple[Any, str]] = {
    "mode": ("inline", "inline: the central stores telemetry | process: it runs pilegate ingest | external"),
    "client_id": (None, "MQTT client id of the ingest process; default the central's client_id + '-ingest'"),
    "username": (None, "broker user of the ingest process (see config/mosquitto); default the central's"),
    "password": (None, "its broker password (prefer password_file)"),
    "password_file": (None, "file whose first line is the ingest's broker password"),
}
INGEST_MODES = ("process", "inline", "external")
AUTH_KEYS: dict[str, tuple[Any, str]] = {
    "token_ttl_s": (7 * 86400, "how long a login token is valid"),
}
PAYMENTS_KEYS: dict[str, tuple[Any, str]] = {
    "tolerance_s": (DEFAULT_TOLERANCE_S, "a provider callback's timestamp may be this far from now"),
    "wechat_secret": (None, "HMAC secret of WeChat Pay callbacks (prefer wechat_secret_file)"),
    "wechat_secret_file": (None, "file whose first line is the WeChat callback secret"),
    "alipay_secret": (None, "HMAC secret of Alipay callbacks (prefer alipay_secret_file)"),
    "alipay_secret_file": (None, "file whose first line is the Alipay callback secret"),
}
MIN_SECRET_LEN = 16  # a shorter provider secret is guessable
STATION_EXTRA_KEYS: dict[str, tuple[Any, str]] = {
    "params_file": (None, "station parameters TOML instead of inline keys"),
}
STATIONS_EXTRA_KEYS: dict[str, tuple[Any, str]] = {
    "name": (None, "display name of the station record (default: its code)"),
    **STATION_EXTRA_KEYS,
}


def load_params(path: str | Path) -> StationParams:
    """Read and validate a station parameters TOML file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise StationParamsError([(str(path), f"cannot read: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise StationParamsError([(str(path), f"not valid TOML: {exc}")]) from exc
    return params_from_mapping(data)


@dataclass(frozen=True)
class CentralMqttSettings:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    client_id: str
    keepalive_s: int


@dataclass(frozen=True)
class IngestSettings:
    """``[ingest]``: where telemetry is stored from (see docs/storage.md) and its broker identity."""

    mode: str = "inline"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class StationConfig:
    """A station this central runs from its start: code (the MQTT ``{station}``), name, parameters."""

    code: str
    name: str
    params: StationParams


@dataclass(frozen=True)
class CentralConfig:
    station: str
    station_name: str
    data_dir: Path
    time_scale: float
    log_level: str
    log_format: str
    telemetry_retention_days: float
    http_host: str
    http_port: int
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]
    metrics: str
    metrics_token: str | None
    token_ttl_s: int
    mqtt: CentralMqttSettings
    params: StationParams
    payments: PaymentSettings
    database: str = ""  # a sqlite:/// (absolute path) or postgresql:// URL; "" = data_dir/central.db
    ingest: IngestSettings = IngestSettings()
    more_stations: tuple[StationConfig, ...] = ()  # the [stations.CODE] tables
    instance: str = ""  # [central] instance; "" = hostname-httpport (see instance_name)
    advertise_url: str | None = None  # [http] advertise_url; None: see peer_url

    @property
    def peer_url(self) -> str:
        """Where the other centrals reach this one's HTTP side."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        wildcard = self.http_host in ("0.0.0.0", "::", "")  # noqa: S104 - compared, not bound
        host = socket.gethostname() if wildcard else self.http_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.http_port}"

    @property
    def instance_name(self) -> str:
        """This central's name among the centrals on one PostgreSQL database."""
        return self.instance or f"{socket.gethostname()}-{self.http_port}"

    @property
    def stations(self) -> dict[str, StationConfig]:
        """Every configured station by code, the default one (``[central] station``) first."""
        default = StationConfig(self.station, self.station_name, self.params)
        return {default.code: default, **{s.code: s for s in self.more_stations}}

    @property
    def db_path(self) -> Path:
        """The SQLite file (of a SQLite database)."""
        if self.database.startswith(SQLITE_PREFIX):
            return Path(self.database.removeprefix(SQLITE_PREFIX))
        return self.data_dir / "central.db"

    @property
    def database_url(self) -> str:
        """What the store opens: the configured URL, or the SQLite file in ``data_dir``."""
        return self.database or f"{SQLITE_PREFIX}{self.db_path}"


SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def _database(raw: Any, base: Path, problems: list[str]) -> str:
    """``central.database``: a PostgreSQL URL as given, a SQLite URL with its path made absolute."""
    if raw is None:
        return ""
    if not isinstance(raw, str) or not raw.startswith((SQLITE_PREFIX, *POSTGRES_PREFIXES)):
        problems.append(
            f"central.database: expected sqlite:///path or postgresql://user@host:port/db, got {raw!r}"
        )
        return ""
    if raw.startswith(POSTGRES_PREFIXES):
        return raw
    path = raw.removeprefix(SQLITE_PREFIX)
    if not path:
        problems.append("central.database: sqlite:/// names no file")
        return ""
    return f"{SQLITE_PREFIX}{base / path}"


def _params(raw: Any, base: Path, problems: list[str], where: str = "station") -> StationParams | None:
    table = dict(raw) if isinstance(raw, Mapping) else {}
    path = table.pop("params_file", None)
    if path:
        try:
            table = {**tomllib.loads((base / str(path)).read_text()), **table}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{where}.params_file: cannot read {base / str(path)}: {exc}")
            return None
    try:
        return params_from_mapping(table)
    except StationParamsError as exc:
        problems.extend(f"{where}.{key}: {what}" for key, what in exc.problems)
        return None


def _more_stations(raw: Any, default: str, base: Path, problems: list[str]) -> tuple[StationConfig, ...]:
    """The ``[stations.CODE]`` tables: codes are topic ids, none is the default station's."""
    if not isinstance(raw, Mapping):
        problems.append("stations: expected tables [stations.CODE]")
        return ()
    out: list[StationConfig] = []
    for code, table in raw.items():
        where = f"stations.{code}"
        try:
            check_id(where, str(code))
        except TopicError as exc:
            problems.append(str(exc))
            continue
        if code == default:
            problems.append(
                f"{where}: {code!r} is the default station ([central] station); configure it in [station]"
            )
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{where}: expected a table")
            continue
        name = table.get("name", code)
        named = isinstance(name, str) and bool(name.strip())
        if not named:
            problems.append(f"{where}.name: expected a non-empty string, got {name!r}")
        params = _params({k: v for k, v in table.items() if k != "name"}, base, problems, where)
        if params is not None and named:
            out.append(StationConfig(str(code), name, params))
    return tuple(out)


def _trusted_proxies(raw: Any, problems: list[str]) -> tuple[IPv4Network | IPv6Network, ...]:
    """``[http] trusted_proxies``: addresses or networks (``10.0.0.0/8``) of the reverse proxies."""
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        problems.append(f"http.trusted_proxies: expected a list of addresses or networks, got {raw!r}")
        return ()
    networks: list[IPv4Network | IPv6Network] = []
    for item in raw:
        try:
            networks.append(ip_network(item.strip(), strict=False))
        except ValueError:
            problems.append(f"http.trusted_proxies: {item!r} is not an address or a network")
    return tuple(networks)


def _metrics_token(h: Mapping[str, Any], base: Path, problems: list[str]) -> str | None:
    """The metrics bearer token of ``[http] metrics_token_file`` (never echoed in a problem)."""
    token = read_secret(None, h["metrics_token_file"], "http.metrics_token_file", base, problems)
    if token is not None and len(token) < MIN_METRICS_TOKEN_LEN:
        problems.append(
            f"http.metrics_token_file: the token must be at least {MIN_METRICS_TOKEN_LEN} characters"
        )
        return None
    return token


def _payments(raw: Any, base: Path, problems: list[str]) -> PaymentSettings:
    """Provider callback secrets (inline or from files) and the replay window of ``[payments]``."""
    p = take(raw, PAYMENTS_KEYS, "payments", problems)
    check(problems, "payments.tolerance_s", p["tolerance_s"], int, lambda v: 1 <= v <= 3600, "1..3600 s")
    secrets: dict[PaymentMethod, bytes] = {}
    for provider, method in PROVIDERS.items():
        where = f"payments.{provider}_secret"
        secret = read_secret(
            p[f"{provider}_secret"], p[f"{provider}_secret_file"], f"{where}_file", base, problems
        )
        if secret is None:
            continue
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LEN:  # never echo a secret
            problems.append(f"{where}: must be a string of at least {MIN_SECRET_LEN} characters")
        else:
            secrets[method] = secret.encode()
    return PaymentSettings(secrets=secrets, tolerance_s=p["tolerance_s"])


def _ingest(raw: Any, base: Path, problems: list[str]) -> IngestSettings:
    i = take(raw, INGEST_KEYS, "ingest", problems)
    check(problems, "ingest.mode", i["mode"], str, lambda v: v in INGEST_MODES, " | ".join(INGEST_MODES))
    password = read_secret(i["password"], i["password_file"], "ingest.password_file", base, problems)
    return IngestSettings(i["mode"], i["client_id"], i["username"], password)


def parse_config(
    data: Mapping[str, Any], source: str = "<config>", base: Path | None = None
) -> CentralConfig:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    base = base or Path.cwd()
    unknown_tables(
        data, ("central", "http", "mqtt", "ingest", "auth", "payments", "station", "stations"), problems
    )
    c = take(data.get("central", {}), CENTRAL_KEYS, "central", problems)
    try:
        check_id("central.station", str(c["station"]))
    except TopicError as exc:
        problems.append(str(exc))
    check(
        problems, "central.time_scale", c["time_scale"], NUMBER, lambda v: 0 < v <= 3600, "0 < scale <= 3600"
    )
    check(
        problems,
        "central.telemetry_retention_days",
        c["telemetry_retention_days"],
        NUMBER,
        lambda v: 0 < v <= 3650,
        "0 < days <= 3650",
    )
    check(
        problems,
        "central.log_level",
        c["log_level"],
        str,
        lambda v: v in ("debug", "info", "warning", "error"),
        "debug|info|warning|error",
    )
    h = take(data.get("http", {}), HTTP_KEYS, "http", problems)
    check(problems, "http.port", h["port"], int, lambda v: 0 <= v <= 65535, "0..65535")
    check(problems, "http.host", h["host"], str, bool, "a host")
    check(
        problems, "http.metrics", h["metrics"], str, lambda v: v in METRICS_MODES, " | ".join(METRICS_MODES)
    )
    check(
        problems,
        "http.advertise_url",
        h["advertise_url"],
        str,
        lambda v: v.startswith(("http://", "https://")),
        "an http:// or https:// URL",
    )
    trusted_proxies = _trusted_proxies(h["trusted_proxies"], problems)
    metrics_token = _metrics_token(h, base, problems)
    m = take(data.get("mqtt", {}), MQTT_KEYS, "mqtt", problems)
    host, port, tls = parse_mqtt_url(m["url"], "mqtt.url", problems)
    password = read_secret(m["password"], m["password_file"], "mqtt.password_file", base, problems)
    check(problems, "mqtt.keepalive_s", m["keepalive_s"], int, lambda v: 5 <= v <= 3600, "5..3600")
    ingest = _ingest(data.get("ingest", {}), base, problems)
    a = take(data.get("auth", {}), AUTH_KEYS, "auth", problems)
    check(
        problems,
        "auth.token_ttl_s",
        a["token_ttl_s"],
        int,
        lambda v: 60 <= v <= 90 * 86400,
        "60 s .. 90 days",
    )
    payments = _payments(data.get("payments", {}), base, problems)
    params = _params(data.get("station", {}), base, problems)
    more_stations = _more_stations(data.get("stations", {}), str(c["station"]), base, problems)
    database = _database(c["database"], base, problems)
    instance = c["instance"]
    check(
        problems,
        "central.instance",
        instance,
        str,
        lambda v: 0 < len(v) <= 100,
        "1-100 characters",
    )
    if problems or params is None:
        raise ConfigError(source, problems)
    return CentralConfig(
        station=c["station"],
        station_name=str(c["station_name"]),
        data_dir=base / str(c["data_dir"]),
        time_scale=float(c["time_scale"]),
        log_level=c["log_level"],
        log_format=c["log_format"],
        telemetry_retention_days=float(c["telemetry_retention_days"]),
        http_host=h["host"],
        http_port=h["port"],
        trusted_proxies=trusted_proxies,
        metrics=h["metrics"],
        metrics_token=metrics_token,
        token_ttl_s=a["token_ttl_s"],
        mqtt=CentralMqttSettings(host, port, tls, m["username"], password, m["client_id"], m["keepalive_s"]),
        params=params,
        payments=payments,
        database=database,
        ingest=ingest,
        more_stations=more_stations,
        instance=instance or "",
        advertise_url=h["advertise_url"],
    )


def load_config(path: str | Path) -> CentralConfig:
    """Read and validate a central TOML file. Relative paths in it are relative to the file."""
    path = Path(path)
    data = read_toml(path)
    return parse_config(data, str(path), path.parent.resolve())
