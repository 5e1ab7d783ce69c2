"""What the family end-to-end tests share: the shipped charger families, the unit id each answers on
(the one its vendor document gives) and the read-back registers the simulator has no model for,
fixed per family in the simulator's pile config."""

from __future__ import annotations

FAMILIES = ("keba-p30", "alfen-ng9xx", "bender-cc61x", "abb-terra-ac")
UNITS = {"keba-p30": 255}  # a KEBA P30 answers on unit 255 only; the others on 1 here
# read-back registers the simulator has no model for, fixed per family in its pile config
FIXED_REGISTERS = {
    "alfen-ng9xx": {"availability": 1},  # operative
    "abb-terra-ac": {"user_max_A": 32},  # the installer's maximum (caps the current)
    "keba-p30": {"max_supported_A": 32},  # the hardware's maximum (caps the current)
}


def unit_of(family: str) -> int:
    """The unit id a pile of ``family`` answers on."""
    return UNITS.get(family, 1)


def fixed_registers_toml(family: str) -> str:
    """The simulator pile config line fixing ``family``'s unmodelled read-back registers."""
    fixed = FIXED_REGISTERS.get(family)
    return "registers = { " + ", ".join(f"{k} = {v}" for k, v in fixed.items()) + " }\n" if fixed else ""


def sim_pile_toml(pile: str, family: str, rated_power_W: int) -> str:
    """A ``[[piles]]`` entry of the simulator's config: one trickle pile of ``family`` on Modbus TCP."""
    return (
        f'[[piles]]\nid = "{pile}"\nkind = "trickle"\nrated_power_W = {rated_power_W}\n'
        f'unit = {unit_of(family)}\nmap = "{family}"\n' + fixed_registers_toml(family) + "\n"
    )
