"""Limits on what drivers and operators may ask for, shared by both REST APIs and their documents."""

from __future__ import annotations

MIN_KWH = 0.01  # below this a request is noise: piles meter in whole Wh
MAX_KWH = 1000.0  # a request or battery above this is a typo, not a car
