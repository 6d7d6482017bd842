"""Builds the on_success / on_failure destinations and dead-letter queues of the functions from config."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from router.config.models import DestinationConfig, RouterConfig
from router.destinations.base import Destination
from router.destinations.file import FileDestination
from router.destinations.function import FunctionDestination, Submit
from router.destinations.http import HttpDestination
from router.errors import ConfigError
from router.suggest import did_you_mean

if TYPE_CHECKING:
    from router.destinations.amqp import AmqpConnections
    from router.destinations.dead_letter import DeadLetterQueue


def async_prefix(function: str) -> str:
    """Where Lambda's S3 destination writes a function's failed async events."""
    return f"aws/lambda/async/{function}"


def mapping_prefix(mapping_uuid: str) -> str:
    """Where Lambda's S3 destination writes an event source mapping's discarded batches (a folder a shard
    below)."""
    return f"aws/lambda/{mapping_uuid}"


@dataclass(slots=True)
class FunctionDestinations:
    on_success: Destination | None = None
    on_failure: Destination | None = None
    dead_letter: DeadLetterQueue | None = None

    def get(self, which: str) -> Destination | None:
        return self.on_success if which == "on_success" else self.on_failure


class DestinationBuilder:
    """Builds destinations from their config; collects every problem instead of stopping at the first.

    File destinations writing the same path share one writer lock, so records never interleave. Used for
    the functions' ``async.on_success / on_failure`` and for the stream routes' ``source.on_failure``.
    """

    def __init__(self, config: RouterConfig, *, session: aiohttp.ClientSession, submit: Submit) -> None:
        self._config = config
        self._session = session
        self._submit = submit
        self._locks: dict[Path, asyncio.Lock] = {}
        self._amqp: AmqpConnections | None = None  # one robust connection per broker URL, lazily
        self.problems: list[str] = []

    def build(self, where: str, cfg: DestinationConfig, *, s3_prefix: str = "") -> Destination | None:
        """The destination for ``cfg`` (``where`` is its config path), or None after noting a problem.
        ``s3_prefix``: where an ``s3`` destination writes (``async_prefix`` or ``mapping_prefix``)."""
        config = self._config
        if cfg.type == "file":
            path = (config.config_dir / cfg.path).resolve()
            return FileDestination(path, self._locks.setdefault(path, asyncio.Lock()))
        if cfg.type == "http":
            return HttpDestination(cfg.url, headers=cfg.headers, timeout=cfg.timeout, session=self._session)
        if cfg.type == "function":
            if cfg.function not in config.functions:
                hint = did_you_mean(cfg.function, config.functions)
                self.problems.append(f"{where}.function: unknown function {cfg.function!r}" + (
                    f"; {hint}" if hint else ""))
                return None
            return FunctionDestination(cfg.function, self._submit)
        if cfg.type == "sqs":
            from router.destinations.sqs import SqsDestination

            return SqsDestination(cfg.queue_url, aws=config.aws)
        if cfg.type == "sns":
            from router.destinations.sns import SnsDestination

            return SnsDestination(cfg.topic_arn, aws=config.aws)
        if cfg.type == "eventbridge":
            from router.destinations.eventbridge import EventBridgeDestination

            return EventBridgeDestination(cfg.event_bus_arn, aws=config.aws)
        if cfg.type == "s3":
            if not s3_prefix:  # Lambda names the object after the function or the mapping
                self.problems.append(f"{where}: an s3 destination is an on_failure of a function's async "
                                     "events or of a stream route only (as on Lambda); use another type")
                return None
            from router.destinations.s3 import S3Destination

            return S3Destination(cfg.bucket_arn, prefix=s3_prefix, aws=config.aws)
        if cfg.type == "amqp":
            from router.destinations.amqp import AmqpConnections, AmqpDestination

            if self._amqp is None:
                self._amqp = AmqpConnections()
            return AmqpDestination(cfg.url, exchange=cfg.exchange, routing_key=cfg.routing_key,
                                   connections=self._amqp, timeout=cfg.timeout)
        self.problems.append(
            f"{where}.type: destination type {cfg.type!r} is not supported; "
            "use file, http, function, sqs, sns, eventbridge, s3 or amqp"
        )
        return None

    def check(self) -> None:
        """Raise ``ConfigError`` listing every unusable destination built so far."""
        if self.problems:
            raise ConfigError(list(self.problems))

    async def close(self) -> None:
        """Close the connections the built destinations opened (amqp); call once they are idle."""
        if self._amqp is not None:
            await self._amqp.close()


def build_destinations(
    config: RouterConfig, *, session: aiohttp.ClientSession, submit: Submit,
    builder: DestinationBuilder | None = None, functions: Iterable[str] | None = None,
) -> dict[str, FunctionDestinations]:
    """The async destinations of every function (or of ``functions``). Raises ``ConfigError`` listing
    every unusable one.

    File paths are relative to the config file's directory. Pass ``builder`` to ``close()`` it later.
    """
    builder = builder or DestinationBuilder(config, session=session, submit=submit)
    out: dict[str, FunctionDestinations] = {}
    for name in config.functions if functions is None else functions:
        fn = config.functions[name]
        dests = FunctionDestinations()
        if fn.async_.on_success is not None:
            dests.on_success = builder.build(f"functions.{name}.async.on_success", fn.async_.on_success)
        if fn.async_.on_failure is not None:
            dests.on_failure = builder.build(f"functions.{name}.async.on_failure", fn.async_.on_failure,
                                             s3_prefix=async_prefix(name))
        if fn.async_.dead_letter is not None:
            from router.destinations.dead_letter import DeadLetterQueue

            dests.dead_letter = DeadLetterQueue(fn.async_.dead_letter, aws=config.aws)
        out[name] = dests
    builder.check()
    return out
