"""What the contract raises: each error carries what its catcher needs, and reads well."""

from __future__ import annotations


class ContractError(Exception):
    """Root of everything pool.contract raises on purpose."""


class InvalidSpec(ContractError):
    """A field of a spec that cannot be used: the field, the value and why."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option, self.value, self.reason = option, value, reason
        super().__init__(f"invalid {option} {value!r}: {reason}")


class QueueFull(ContractError):
    """A function's queue is at its cap: the call was not queued."""

    def __init__(self, function: str, length: int) -> None:
        self.function, self.length = function, length
        super().__init__(f"function {function!r} has {length} calls queued, its limit")


class TooManyKeys(ContractError):
    """A function took its hour's worth of idempotency keys: the call was not queued."""

    def __init__(self, function: str, limit: int) -> None:
        self.function, self.limit = function, limit
        super().__init__(f"function {function!r} was sent {limit} Idempotency-Keys this hour, "
                         "its limit")  # fmt: skip


class StaleSpec(ContractError):
    """The function was changed or removed since the spec a call was built on was read:
    nothing was queued (read it again, and judge the call again)."""

    def __init__(self, function: str) -> None:
        self.function = function
        super().__init__(f"function {function!r} changed while the call was made")


class TooManySecrets(ContractError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"this host keeps at most {limit} secrets")


class IdempotencyConflict(ContractError):
    """An idempotency key was used before for a different request."""

    def __init__(self, key: str, call_id: str) -> None:
        self.key, self.call_id = key, call_id
        super().__init__(
            f"Idempotency-Key {key!r} was used for a different request (call {call_id})"
        )


class CommandFailed(ContractError):
    """A node command answered with an error: what kind (``not_found``, ``conflict``,
    ``invalid`` ... see ``messages.FAILURES``) and why."""

    def __init__(self, error: str, message: str) -> None:
        self.error, self.message = error, message
        super().__init__(f"{error}: {message}")


class NoNode(ContractError):
    """No live node can take it (or the one named is not live)."""
