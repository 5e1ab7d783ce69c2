"""pilegate: runs EV charging stations (edge gateway, central service, simulated piles)."""

__version__ = "0.1.0"
