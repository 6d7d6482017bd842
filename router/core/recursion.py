"""Recursive loop detection, as Lambda's: an invocation whose chain has already invoked its function
``lineage.LIMIT`` (16) times is not run.

The dispatcher asks ``LoopGuard.admit`` before every invocation. ``admit`` reads the count of the
function in the ``Lineage`` of the trace header the event came with (``Invocation.trace_id``: an SQS
message's ``AWSTraceHeader``, an AMQP message's ``x-amzn-trace-id``, the header a destination was sent
with) and either gives the invocation the next header (the count one more, the same ``Root``), which the
function sees as ``_X_AMZN_TRACE_ID`` and the SDKs pass on, or, past the limit with the function's
``recursive_loop: Terminate`` (the default), refuses it: the event is not invoked, counted in
``router_recursive_loops_total{function}``, logged once per chain, and the caller gets Lambda's
``RecursiveInvocationException`` as a non-retryable error result (an async event then goes to its
``on_failure`` destination, an SQS message stays on its queue for the redrive policy, an AMQP message
takes the route's ``on_error`` path). ``recursive_loop: Allow`` counts on and never refuses.
"""

from __future__ import annotations

import collections
import json
import logging

from router import lineage
from router.config.models import RouterConfig
from router.invocation import ErrorType, Invocation, Result
from router.metrics import Metrics

log = logging.getLogger("router.recursion")

EXCEPTION = "RecursiveInvocationException"
_LOGGED_CHAINS = 1024
"""Chains remembered as already logged (a refused SQS message comes back until the redrive policy takes
it: its chain is logged once, each refusal counted)."""


def refusal_message(result: Result) -> str | None:
    """The message of a result ``LoopGuard.admit`` refused, None for any other result (the Invoke API
    answers a refused sync call with Lambda's 400 ``RecursiveInvocationException``)."""
    if result.ok or result.error_type is not ErrorType.CONFIG:
        return None
    try:
        body = json.loads(result.payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("errorType") != EXCEPTION:
        return None
    return str(body.get("errorMessage", ""))


class LoopGuard:
    """Counts each invocation into its chain's ``Lineage`` and refuses the one past ``lineage.LIMIT``."""

    def __init__(self, config: RouterConfig, metrics: Metrics, *, limit: int = lineage.LIMIT) -> None:
        self._metrics = metrics
        self._limit = limit
        self._logged: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.reconfigure(config)

    def reconfigure(self, config: RouterConfig) -> None:
        """Take the functions (and their ``recursive_loop``) of a reloaded config."""
        self._keys = {name: lineage.function_key(config.aws.function_arn(name)) for name in config.functions}
        self._allow = {name for name, fn in config.functions.items() if fn.recursive_loop == "Allow"}

    def admit(self, inv: Invocation) -> Result | None:
        """None when ``inv`` may run (its ``trace_id`` is then this invocation's header); otherwise the
        error result of a refused invocation (the function was not invoked)."""
        key = self._keys.get(inv.function)
        if key is None:  # not a function of this config (a reload removed it): nothing to count
            return None
        done = lineage.hops(inv.trace_id, key) if inv.trace_id else 0
        if done >= self._limit and inv.function not in self._allow:
            self._refused(inv, done)
            return Result.error(
                EXCEPTION,
                f"function '{inv.function}': not invoked: this chain of events has invoked it {done} times "
                f"(recursive loop detection stops it after {self._limit}); break the loop, or set "
                f"functions.{inv.function}.recursive_loop: Allow",
                error_type=ErrorType.CONFIG, retryable=False,
            )
        inv.trace_id = lineage.next_header(inv.trace_id, key)
        return None

    def _refused(self, inv: Invocation, done: int) -> None:
        self._metrics.recursive_loops.labels(inv.function).inc()
        chain = lineage.root(inv.trace_id) or "?"
        if chain in self._logged:
            self._logged.move_to_end(chain)
            return
        self._logged[chain] = None
        if len(self._logged) > _LOGGED_CHAINS:
            self._logged.popitem(last=False)
        where = f"route '{inv.route}'" if inv.route else f"source {inv.source}"
        log.warning(
            "function '%s': recursive loop detected (%s, chain Root=%s): this chain has invoked the function "
            "%d times; the event was dropped, not invoked (recursive_loop: Terminate); break the loop, or "
            "set functions.%s.recursive_loop: Allow", inv.function, where, chain, done, inv.function,
            extra={"function": inv.function, "route": inv.route, "request_id": inv.request_id,
                   "source": inv.source, "chain": chain, "error_type": ErrorType.CONFIG.value})
