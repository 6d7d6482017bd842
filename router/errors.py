"""The whole exception hierarchy of the router; each class says when it is raised."""

from __future__ import annotations


class RouterError(Exception):
    """Base of every error the router raises on purpose."""


class ConfigError(RouterError):
    """Raised when the YAML config cannot be loaded or fails validation.

    ``problems`` holds one line per problem, already formatted as
    ``FILE:LINE:COL: path: message``.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class FunctionNotFound(RouterError):
    """Raised when an invocation names a function that is not configured."""

    def __init__(self, name: str, hint: str = "") -> None:
        self.name = name
        msg = f"function not found: {name}"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class QualifierNotFound(FunctionNotFound):
    """Raised when an invocation names a version or alias (``name:qualifier``) the function does not have."""

    def __init__(self, name: str, qualifier: str, hint: str = "") -> None:
        super().__init__(f"{name}:{qualifier}", hint)
        self.function = name
        self.qualifier = qualifier


class VersionError(RouterError):
    """Raised when a version cannot be published or run: what is wrong and how to fix it."""


class Throttled(RouterError):
    """Raised when a sync invocation finds its function at its concurrency cap, or the router at its
    account-wide limit (``limits.concurrent_executions``): ``reason`` is Lambda's TooManyRequestsException
    Reason for each."""

    FUNCTION = "ReservedFunctionConcurrentInvocationLimitExceeded"
    ACCOUNT = "ConcurrentInvocationLimitExceeded"

    def __init__(self, function: str, limit: int, reason: str = FUNCTION) -> None:
        self.function = function
        self.limit = limit
        self.reason = reason
        if reason == self.FUNCTION and limit == 0:
            message = (f"function '{function}': paused (reserved concurrency 0); resume it with "
                       f"`router resume function {function}` or delete its reserved concurrency")
        elif reason == self.ACCOUNT:
            message = (f"function '{function}': rate exceeded, all {limit} concurrent executions of the "
                       "router are busy; raise limits.concurrent_executions or retry later")
        else:
            message = (f"function '{function}': rate exceeded, all {limit} concurrent executions are busy; "
                       f"raise functions.{function}.concurrency or retry later")
        super().__init__(message)


class PayloadTooLarge(RouterError):
    """Raised when a request or response payload exceeds its limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what}: {size} bytes is over the limit of {limit} bytes")


class StateStoreError(RouterError):
    """Raised when the state store cannot be opened or written."""


class Unavailable(RouterError):
    """Raised when an async event cannot be accepted now: the state store or the async queue did not
    confirm its write within ``state.write_timeout``, cannot be reached, or is shutting down. The event
    was not accepted; callers answer 503 with ``Retry-After: retry_after`` (seconds)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(message)


class StateStoreUnavailable(StateStoreError, Unavailable):
    """Raised when the state store did not commit an async event in time or could not write it."""


class AsyncQueueError(Unavailable):
    """Raised when an async event cannot be published to ``async_queue`` (broker away, refused, no
    confirm in time): the event was not accepted (503 with Retry-After to a webhook caller)."""


class EnvironmentStartError(RouterError):
    """Raised when an execution environment cannot be started (bad code dir, bootstrap missing)."""


class DestinationError(RouterError):
    """Raised when a destination record cannot be delivered (write failed, non-2xx answer)."""
