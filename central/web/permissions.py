"""Every access rule of the web APIs, in one place.

- A route is PUBLIC (no token), USER (any valid token) or STAFF (permission level >= 3, 管理员).
- A user acts on their own data; another user's data needs staff.
- Role management needs level 4 (超级管理员).
- A user pays their own order by balance only; a wallet payment (微信, 支付宝) is confirmed by staff
  or by the provider's signed callback, never by the payer's word.
- An administrator may not manage a user of a higher level than their own, nobody raises their
  own level, and only staff change an account's status.
- Nobody disables or deletes their own account, and no change may leave the system without an
  active super administrator (both 409: the request is understood but refused).

The levels themselves (and which of them is staff) are :mod:`central.domain.levels`.
"""

from __future__ import annotations

from enum import StrEnum

from central.application.auth import AuthUser
from central.domain.levels import PermissionLevel
from central.domain.orders import PaymentMethod
from central.web.errors import PERMISSION_DENIED, ApiError, conflict


class Access(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"  # no token needed
    USER = "user"  # any valid token
    STAFF = "staff"  # a token of a staff account (permission level >= 3)


def forbidden(message: str) -> ApiError:
    """403 PERMISSION_DENIED."""
    return ApiError(403, PERMISSION_DENIED, message)


def check_access(access: Access, user: AuthUser) -> None:
    """403 unless an authenticated ``user`` may call a route of ``access``."""
    if access is Access.STAFF and not user.is_staff:
        raise forbidden("权限不足: 需要管理员账户")


def may_act_for(actor: AuthUser, user_id: int | None) -> bool:
    """Whether ``actor`` may see or change the data of user ``user_id`` (themselves, or staff)."""
    return actor.is_staff or actor.id == user_id


def require_self_or_staff(actor: AuthUser, user_id: int) -> None:
    """A user may act on their own data; another user's needs level >= 3 (the refusal names no id)."""
    if not may_act_for(actor, user_id):
        raise forbidden("权限不足: 其他用户的数据需要管理员权限 (permission level >= 3)")


def check_payment_confirmation(actor: AuthUser, method: int) -> None:
    """Only staff confirm a wallet payment by hand; anyone else pays by balance."""
    if method != PaymentMethod.BALANCE and not actor.is_staff:
        raise forbidden(
            "权限不足: 微信/支付宝支付由支付平台的签名回调 (POST /api/Orders/payments/callback) "
            "或管理员 (permission level >= 3) 确认；请用余额支付 (paymentMethod 3)"
        )


def require_role_manager(actor: AuthUser) -> None:
    """Role management needs level 4."""
    if actor.level < PermissionLevel.SUPER_ADMIN:
        raise forbidden("权限不足: 角色管理需要超级管理员 (permission level 4)")


def require_not_outranked(actor: AuthUser, user_id: int, target_level: int) -> None:
    """An administrator may not manage a user of a higher level than their own."""
    if actor.id != user_id and target_level > actor.level:
        raise forbidden("权限不足: 不能管理权限级别高于你的用户")


def check_role_grant(actor: AuthUser, user_id: int, role_level: int) -> None:
    """Nobody raises their own level by taking a role above it."""
    if actor.id == user_id and role_level > actor.level:
        raise forbidden("权限不足: 不能提升自己的权限级别")


def check_status_change(actor: AuthUser, user_id: int, status: int) -> None:
    """Only staff change a status, and nobody disables their own account."""
    if not actor.is_staff:
        raise forbidden("权限不足: 只有管理员 (permission level >= 3) 可以修改用户状态")
    if actor.id == user_id and status == 0:
        raise conflict("不能禁用自己的账户")


def check_deletion(actor: AuthUser, user_id: int) -> None:
    """Nobody deletes their own account."""
    if actor.id == user_id:
        raise conflict("不能删除自己的账户")


def keep_a_super_admin(before: int, after: int) -> None:
    """Refuse a change that takes the last active super administrator away (``before`` and ``after``
    count the active level-4 accounts around it; raised inside the write, the change rolls back)."""
    if before > 0 and after == 0:
        raise conflict("不能移除最后一个超级管理员: 至少需要一个启用的 permission level 4 账户")
