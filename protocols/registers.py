"""Pile register maps: the model, the codec and the shipped maps, in one import for callers.

The model lives in :mod:`protocols.regmodel`, the codec in :mod:`protocols.codec`, the map files
and their loader in ``protocols/maps`` and :mod:`protocols.maploader`; ``docs/register-maps.md``
describes the file format. ``SIM_V1`` is the simulator's family, loaded from
``protocols/maps/pilegate-sim-v1.toml``; :func:`get_map` finds any shipped map by name or a map
file by path.
"""

from __future__ import annotations

from protocols.codec import decode, encode, encode_field, pack_u16
from protocols.maploader import MapError, ShippedMaps, get_map, load_map, shipped_names
from protocols.regmodel import (
    Block,
    CodecError,
    Command,
    CommandStatus,
    CurrentRecipe,
    FaultCode,
    Field,
    FieldType,
    Order,
    PortState,
    Recipe,
    RegisterMap,
    SequencedRecipe,
    SimFault,
)

__all__ = [
    "MAPS",
    "SIM_V1",
    "Block",
    "CodecError",
    "Command",
    "CommandStatus",
    "CurrentRecipe",
    "FaultCode",
    "Field",
    "FieldType",
    "MapError",
    "Order",
    "PortState",
    "Recipe",
    "RegisterMap",
    "SequencedRecipe",
    "SimFault",
    "decode",
    "encode",
    "encode_field",
    "get_map",
    "load_map",
    "pack_u16",
    "shipped_names",
]

MAPS = ShippedMaps()
SIM_V1 = get_map("pilegate-sim-v1")
