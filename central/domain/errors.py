"""Domain errors: small named classes with a stable ``code``; no HTTP here (the web layer maps)."""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses; ``code`` is stable for API error bodies."""

    code = "DOMAIN_ERROR"


class QueueFullError(DomainError):
    """The waiting area already holds WaitingAreaSize cars."""

    code = "QUEUE_FULL"


class DuplicateRequestError(DomainError):
    """The car already has an active charging request."""

    code = "DUPLICATE_REQUEST"


class UnknownRequestError(DomainError):
    """No active charging request for that car."""

    code = "RESOURCE_NOT_FOUND"


class UnknownPileError(DomainError):
    """No pile or charging point with that id."""

    code = "RESOURCE_NOT_FOUND"


class InvalidRequestError(DomainError):
    """A requested amount or mode is not acceptable (kWh must be > 0)."""

    code = "VALIDATION_ERROR"


class ChangeNotAllowedError(DomainError):
    """Only cars in the waiting area may change; in the charging area only cancel works."""

    code = "CHANGE_NOT_ALLOWED"


class NotChargingError(DomainError):
    """The car is not charging, so its segment cannot finish."""

    code = "NOT_CHARGING"


class PileStateError(DomainError):
    """The pile is already in the state asked for (fault twice, recover a working pile...)."""

    code = "PILE_STATE_CONFLICT"


class TimeWentBackwardsError(DomainError):
    """An operation is dated before one already applied."""

    code = "TIME_WENT_BACKWARDS"


class SchedulerStateError(DomainError):
    """A persisted scheduler state cannot be restored (inconsistent or malformed)."""

    code = "STATE_ERROR"
