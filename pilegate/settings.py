"""Helpers shared by every pilegate config file: typed key tables, checks that collect problems.

A config module declares its keys as ``{key: (default, help)}`` (``...`` = required), takes each
table with :func:`take`, checks values with :func:`check`, and raises one :class:`ConfigError`
listing every problem by entry name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KeyTable = dict[str, tuple[Any, str]]
NUMBER = (int, float)


class ConfigError(ValueError):
    """A configuration file has problems; ``problems`` lists each one by entry name."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{listing}")


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict, or a ConfigError saying why it cannot be read."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


def unknown_tables(data: Mapping[str, Any], known: tuple[str, ...], problems: list[str]) -> None:
    """Record every top-level table of ``data`` that is not in ``known``."""
    problems.extend(f"unknown table {key!r}" for key in data if key not in known)


def take(table: Any, keys: Mapping[str, tuple[Any, str]], where: str,
         problems: list[str]) -> dict[str, Any]:
    """The keys of ``table`` with defaults filled in; unknown and missing keys are problems."""
    if not isinstance(table, Mapping):
        problems.append(f"{where}: expected a table")
        table = {}
    out: dict[str, Any] = {}
    for key in table:
        if key not in keys:
            problems.append(f"{where}: unknown key {key!r}")
    for key, (default, _help) in keys.items():
        if key in table:
            out[key] = table[key]
        elif default is ...:
            problems.append(f"{where}.{key}: required")
            out[key] = None
        else:
            out[key] = default
    return out


def check(problems: list[str], where: str, value: Any, kind: type | tuple[type, ...],
          ok: Callable[[Any], bool] = lambda v: True, expect: str = "") -> None:
    """Record a problem unless ``value`` is None or of ``kind`` and ``ok``."""
    if value is None:
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        problems.append(f"{where}: expected {names}, got {value!r}")
    elif not ok(value):
        problems.append(f"{where}: {value!r} is not {expect}")


def parse_mqtt_url(url: str, where: str, problems: list[str]) -> tuple[str, int, bool]:
    """(host, port, tls) of ``mqtt://host:port`` or ``mqtts://host:port``."""
    parts = urlsplit(str(url))
    port = None
    try:
        port = parts.port
    except ValueError:
        problems.append(f"{where}: bad port in {url!r}")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        problems.append(f"{where}: {url!r} is not mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    return parts.hostname or "", port or (8883 if tls else 1883), tls


def read_secret(value: str | None, path: str | None, where: str, base: Path,
                problems: list[str]) -> str | None:
    """A password given inline or as the first line of a file (relative to ``base``)."""
    if not path:
        return value
    full = base / path
    try:
        return full.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        problems.append(f"{where}: cannot read a password from {full}")
        return None


def is_loopback_listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return host in ("127.0.0.1", "localhost", "[::1]") and port.isdigit() and \
        0 <= int(port) <= 65535
