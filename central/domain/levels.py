"""Permission levels of accounts, as the data dictionary names them.

An account's level is the highest ``permission_level`` among its roles (1 with none). Level 3
(管理员) and above is staff; level 4 (超级管理员) manages roles. Both APIs show these meanings.
"""

from __future__ import annotations

from enum import IntEnum


class PermissionLevel(IntEnum):
    """The four system levels; each has a system role of the same level."""

    USER = 1
    VIP = 2
    ADMIN = 3
    SUPER_ADMIN = 4


PERMISSION_LEVEL_NAMES: dict[int, str] = {1: "普通用户", 2: "VIP用户", 3: "管理员", 4: "超级管理员"}
SYSTEM_LEVELS = tuple(int(level) for level in PermissionLevel)
STAFF_LEVEL = PermissionLevel.ADMIN


def is_staff_level(level: int) -> bool:
    """Whether an account of ``level`` is staff (管理员 and above)."""
    return level >= STAFF_LEVEL
