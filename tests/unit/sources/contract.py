"""The contract every polling source passes, against its real service (faststream's broker test case is
the model): one test class with hooks, subclassed per source (sqs/, amqp/, stream/).

What the router promises for every poller: it receives what was published and invokes the function with
it; it acknowledges a message only after the function succeeded, so a failed one comes again; ``stop``
lets the running batch finish and hands back what has not started (the next run gets exactly that);
a fault of the service makes the route not ready in ``/readyz``, and it is ready again once the service
answers. Each subclass provides ``contract``: an ``Adapter`` for its service, with one route called the
same in every source's terms (batch size 1, so one message is one invocation).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from router.invocation import Result
from router.readiness import Readiness
from tests.unit.sources.functions import FunctionInvoker, fail, ok
from tests.waiting import until


class Adapter(Protocol):
    """One polling source under test, on its real service."""

    route: str
    readiness: Readiness

    def running(self, fn: FunctionInvoker, *, concurrency: int | None = None,
                **source: Any) -> AbstractAsyncContextManager[Any]:
        """The source of the route running for the block (batches of one message), then stopped."""
        ...

    async def publish(self, *bodies: str) -> None:
        """Put messages on the route's queue or stream, in order."""
        ...

    def bodies(self, event: dict[str, Any]) -> list[str]:
        """The message bodies of one event the function got."""
        ...

    async def acknowledged(self) -> bool:
        """Whether everything published so far has been acknowledged (deleted, acked, checkpointed)."""
        ...

    def missing(self) -> dict[str, Any]:
        """Source settings naming a queue or stream that does not exist yet (``create_missing`` makes it)."""
        ...

    async def create_missing(self) -> None: ...


class PollerContract:
    """The tests; subclasses define the ``contract`` fixture."""

    async def test_receives_and_acknowledges_after_success(self, contract: Adapter) -> None:
        await contract.publish("a", "b", "c")
        fn = FunctionInvoker()
        async with contract.running(fn):
            await until(lambda: sorted(self.seen(contract, fn)) == ["a", "b", "c"], "every message",
                        deadline=20)
            await until(contract.acknowledged, "every message acknowledged", deadline=20)
        assert all(len(contract.bodies(e)) == 1 for e in fn.events)
        assert sorted(self.seen(contract, fn)) == ["a", "b", "c"]  # each once

    async def test_a_failed_message_is_not_acknowledged_and_comes_again(self, contract: Adapter) -> None:
        failed: list[str] = []

        async def handler(event: dict[str, Any]) -> Result:
            if contract.bodies(event) == ["bad"] and not failed:
                failed.append("bad")
                return fail("the first time")
            return ok()

        await contract.publish("bad", "good")
        fn = FunctionInvoker(handler)
        async with contract.running(fn):
            await until(lambda: self.seen(contract, fn).count("bad") == 2, "the failed message again",
                        deadline=30)
            await until(contract.acknowledged, "everything acknowledged once it succeeded", deadline=20)
        assert self.seen(contract, fn).count("good") == 1

    async def test_stop_lets_the_running_batch_finish_and_hands_back_the_rest(
            self, contract: Adapter) -> None:
        release = asyncio.Event()

        async def handler(event: dict[str, Any]) -> Result:
            if contract.bodies(event) == ["first"]:
                await release.wait()
            return ok()

        await contract.publish("first")
        fn = FunctionInvoker(handler)
        async with contract.running(fn, concurrency=1) as source:
            await until(lambda: fn.running == 1, "the first message running", deadline=20)
            await contract.publish("second", "third")
            stopping = asyncio.create_task(source.stop(10))
            await asyncio.sleep(0)  # stop() raises its stopping flag before its first await
            release.set()  # the running batch finishes within the stop timeout
            await stopping
        assert self.seen(contract, fn)[0] == "first"
        handed_back = [b for b in ("second", "third") if b not in self.seen(contract, fn)]

        again = FunctionInvoker()
        async with contract.running(again):
            await until(lambda: sorted(self.seen(contract, again)) == handed_back, "what had not started",
                        deadline=20)
            await until(contract.acknowledged, "everything acknowledged", deadline=20)
        assert "first" not in self.seen(contract, again)  # acknowledged before the stop returned

    async def test_readiness_goes_false_on_a_fault_and_true_again(self, contract: Adapter) -> None:
        name = f"route {contract.route}"
        fn = FunctionInvoker()
        async with contract.running(fn, **contract.missing()):
            await until(lambda: "not found" in (contract.readiness._flags.get(name) or ""),
                        "the route not ready: not found")
            await contract.create_missing()
            await contract.publish("after")
            await until(lambda: self.seen(contract, fn) == ["after"], "processed after recovery", deadline=30)
            await until(lambda: contract.readiness._flags.get(name, "x") is None, "ready again")

    @staticmethod
    def seen(contract: Adapter, fn: FunctionInvoker) -> list[str]:
        return [b for e in fn.events for b in contract.bodies(e)]
