"""How an HTTP front answers an invocation the dispatcher did not run or accept: the one mapping of what
``Dispatch.invoke`` and ``Dispatch.submit`` raise (function not found, throttled, payload too large,
unavailable, any other failure) to the front's answer, each front answering in its own shape (API
Gateway's for the webhook routes, Lambda's for the Invoke API).

A front catches ``REFUSED`` around its own ``invoke`` or ``submit`` call, so the path of an invocation
that runs has no step more than before. What a function's result is answered with stays each front's
(API Gateway hides a function error behind a 500; Lambda answers 200 with ``X-Amz-Function-Error``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from aiohttp import web

from router.errors import FunctionNotFound, PayloadTooLarge, RouterError, Throttled, Unavailable
from router.invocation import Invocation

REFUSED = (RouterError, OSError)
"""What ``invoke`` and ``submit`` raise when they did not run or accept an invocation."""


class Refusals(ABC):
    """One front's answer to each way the dispatcher refuses an invocation."""

    __slots__ = ()

    def answer(self, exc: RouterError | OSError, inv: Invocation) -> web.Response:
        """The answer to ``exc``, raised by ``invoke(inv)`` or ``submit(inv)``."""
        if isinstance(exc, FunctionNotFound):
            return self.not_found(inv)
        if isinstance(exc, Throttled):
            return self.throttled(inv, exc)
        if isinstance(exc, PayloadTooLarge):
            return self.too_large(inv, exc)
        if isinstance(exc, Unavailable):
            return self.unavailable(inv, exc)
        return self.failed(inv, exc)

    @abstractmethod
    def not_found(self, inv: Invocation) -> web.Response:
        """The invocation's function is not configured."""

    @abstractmethod
    def throttled(self, inv: Invocation, exc: Throttled) -> web.Response:
        """The function or the router is at its concurrency limit (``exc.reason`` says which)."""

    @abstractmethod
    def too_large(self, inv: Invocation, exc: PayloadTooLarge) -> web.Response:
        """The payload is over its path's limit (``exc.limit``)."""

    @abstractmethod
    def unavailable(self, inv: Invocation, exc: Unavailable) -> web.Response:
        """The event was not accepted now (state store or async queue); the client may retry after
        ``exc.retry_after`` seconds."""

    @abstractmethod
    def failed(self, inv: Invocation, exc: RouterError | OSError) -> web.Response:
        """Anything else that kept the router from running or accepting the invocation."""
