"""The MQTT topic tree, the pinned contract between gateways and centrals (README "MQTT topics"):
building topics and parsing them back into their parts.

Every topic starts with ``pilegate/v1/{station}``; the version segment lets a later tree live beside
this one. Identifiers may not contain MQTT wildcards or separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ROOT = "pilegate"
VERSION = "v1"
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

TopicKind = Literal["gw_status", "pile_status", "telemetry", "event", "cmd", "cmd_result"]


class TopicError(ValueError):
    """A topic or identifier does not belong to the pilegate v1 tree."""


def check_id(what: str, value: str) -> str:
    """``value`` if it is a valid station, gateway or pile identifier."""
    if not _ID.match(value):
        raise TopicError(f"{what} {value!r} must be 1-64 of A-Z a-z 0-9 _ . : -")
    return value


def _prefix(station: str) -> str:
    return f"{ROOT}/{VERSION}/{check_id('station', station)}"


def gw_status(station: str, gateway: str) -> str:
    return f"{_prefix(station)}/gw/{check_id('gateway', gateway)}/status"


def pile_status(station: str, pile: str) -> str:
    return f"{_prefix(station)}/pile/{check_id('pile', pile)}/status"


def pile_event(station: str, pile: str) -> str:
    return f"{_prefix(station)}/pile/{check_id('pile', pile)}/event"


def _port(station: str, pile: str, port: int) -> str:
    if not 1 <= port <= 99:
        raise TopicError(f"port {port} outside 1..99")
    return f"{_prefix(station)}/pile/{check_id('pile', pile)}/port/{port}"


def telemetry(station: str, pile: str, port: int) -> str:
    return f"{_port(station, pile, port)}/telemetry"


def cmd(station: str, pile: str, port: int) -> str:
    return f"{_port(station, pile, port)}/cmd"


def cmd_result(station: str, pile: str, port: int) -> str:
    return f"{_port(station, pile, port)}/cmd/result"


def station_filter(station: str) -> str:
    """Subscription filter for everything of one station (``+`` for every station)."""
    return f"{ROOT}/{VERSION}/{station}/#"


def cmd_filter(station: str, pile: str) -> str:
    """Subscription filter for the commands of every port of one pile."""
    return f"{_prefix(station)}/pile/{check_id('pile', pile)}/port/+/cmd"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """The parts of a topic in the tree; ``gateway`` or ``pile``/``port`` are set as the kind needs."""

    kind: TopicKind
    station: str
    gateway: str | None = None
    pile: str | None = None
    port: int | None = None


def parse(topic: str) -> ParsedTopic:
    """Split a topic of the v1 tree into its parts, or raise TopicError naming what is wrong."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != ROOT:
        raise TopicError(f"{topic!r} is not under {ROOT}/")
    if parts[1] != VERSION:
        raise TopicError(f"{topic!r}: unsupported version {parts[1]!r}")
    station, rest = parts[2], parts[3:]
    match rest:
        case ["gw", gateway, "status"]:
            return ParsedTopic("gw_status", station, gateway=gateway)
        case ["pile", pile, "status"]:
            return ParsedTopic("pile_status", station, pile=pile)
        case ["pile", pile, "event"]:
            return ParsedTopic("event", station, pile=pile)
        case ["pile", pile, "port", port, "telemetry"]:
            return ParsedTopic("telemetry", station, pile=pile, port=_parse_port(topic, port))
        case ["pile", pile, "port", port, "cmd"]:
            return ParsedTopic("cmd", station, pile=pile, port=_parse_port(topic, port))
        case ["pile", pile, "port", port, "cmd", "result"]:
            return ParsedTopic("cmd_result", station, pile=pile, port=_parse_port(topic, port))
    raise TopicError(f"{topic!r} is not a topic of the pilegate {VERSION} tree")


def _parse_port(topic: str, port: str) -> int:
    if not port.isdigit() or not 1 <= int(port) <= 99:
        raise TopicError(f"{topic!r}: port {port!r} is not a number 1..99")
    return int(port)
