"""The one error tree of the clearing core.

Two roots, as in asyncpg: `ClearingError` is an operating error (bad input, insufficient
funds, a missing account): expected, handled, and mapped to a gRPC status by
`clearing.api.errors`. `InvariantViolation` is a bug: it is logged loudly and answered
`INTERNAL`. Servicers never build statuses by hand; they raise these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from clearing.reasons import Reason


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: its path (e.g. `orders[3].amount_minor`) and why."""

    field: str
    description: str


class ClearingError(Exception):
    """An expected operating error; `code` names the gRPC status, `reason` the ErrorInfo."""

    code: str = "FAILED_PRECONDITION"
    reason: str = Reason.FAILED_PRECONDITION

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgument(ClearingError):
    """The request is malformed; `violations` name every offending field."""

    code = "INVALID_ARGUMENT"
    reason = Reason.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        first = violations[0] if violations else FieldViolation("", "invalid request")
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}", reason=reason)
        self.violations = list(violations)


class Unauthenticated(ClearingError):
    """No credentials, or credentials that match no key."""

    code = "UNAUTHENTICATED"
    reason = Reason.UNAUTHENTICATED


class PermissionDenied(ClearingError):
    """The key is valid but its roles do not allow the call."""

    code = "PERMISSION_DENIED"
    reason = Reason.ROLE_REQUIRED


class NotFound(ClearingError):
    """The resource does not exist for this platform (another platform's is not shown)."""

    code = "NOT_FOUND"
    reason = Reason.NOT_FOUND


class AlreadyExists(ClearingError):
    """A unique key is taken, or a request id was reused with another payload."""

    code = "ALREADY_EXISTS"
    reason = Reason.ALREADY_EXISTS


class FailedPrecondition(ClearingError):
    """The system is not in a state that allows the call (frozen, closed, insufficient funds)."""

    code = "FAILED_PRECONDITION"
    reason = Reason.FAILED_PRECONDITION


class ResourceExhausted(ClearingError):
    """A queue or limit is full; retry later with the same request id."""

    code = "RESOURCE_EXHAUSTED"
    reason = Reason.OVERLOADED


class Unavailable(ClearingError):
    """A dependency failed before anything was committed; retry with the same request id."""

    code = "UNAVAILABLE"
    reason = Reason.UNAVAILABLE


class Unimplemented(ClearingError):
    """The method exists in the contract but is not built yet."""

    code = "UNIMPLEMENTED"
    reason = Reason.UNIMPLEMENTED


class InvariantViolation(Exception):
    """A broken invariant: a bug. Never caught to continue; answered INTERNAL."""


def invariant(condition: bool, message: str) -> None:
    """Check an invariant; unlike `assert`, it survives `python -O`."""
    if not condition:
        raise InvariantViolation(message)


@dataclass(slots=True)
class Violations:
    """Collects field violations while validating a request; raises them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


_BY_CODE: dict[str, type[ClearingError]] = {
    cls.code: cls for cls in (
        Unauthenticated, PermissionDenied, NotFound, AlreadyExists, FailedPrecondition,
        ResourceExhausted, Unavailable, Unimplemented)
}


def error_from_record(code: str, reason: str, message: str) -> ClearingError:
    """Rebuild a recorded error (the first result of a request id) for a replay."""
    if code == "INVALID_ARGUMENT":
        field, _, description = message.partition(": ")
        return InvalidArgument([FieldViolation(field, description)], reason=reason)
    return _BY_CODE.get(code, FailedPrecondition)(message, reason=reason)
