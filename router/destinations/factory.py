"""Builds the on_success / on_failure destinations of every function from the config."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from router.config.models import DestinationConfig, RouterConfig
from router.destinations.base import Destination
from router.destinations.file import FileDestination
from router.destinations.function import FunctionDestination, Submit
from router.destinations.http import HttpDestination
from router.errors import ConfigError
from router.suggest import did_you_mean


@dataclass(slots=True)
class FunctionDestinations:
    on_success: Destination | None = None
    on_failure: Destination | None = None

    def get(self, which: str) -> Destination | None:
        return self.on_success if which == "on_success" else self.on_failure


def build_destinations(
    config: RouterConfig, *, session: aiohttp.ClientSession, submit: Submit
) -> dict[str, FunctionDestinations]:
    """The destinations of every function. Raises ``ConfigError`` listing every unusable destination.

    File paths are relative to the config file's directory; destinations writing the same file share one
    writer lock, so records never interleave.
    """
    base_dir = config.config_dir
    locks: dict[Path, asyncio.Lock] = {}
    problems: list[str] = []
    out: dict[str, FunctionDestinations] = {}

    def build(where: str, cfg: DestinationConfig) -> Destination | None:
        if cfg.type == "file":
            path = (base_dir / cfg.path).resolve()
            return FileDestination(path, locks.setdefault(path, asyncio.Lock()))
        if cfg.type == "http":
            return HttpDestination(cfg.url, headers=cfg.headers, timeout=cfg.timeout, session=session)
        if cfg.type == "function":
            if cfg.function not in config.functions:
                hint = did_you_mean(cfg.function, config.functions)
                problems.append(f"{where}.function: unknown function {cfg.function!r}" + (
                    f"; {hint}" if hint else ""))
                return None
            return FunctionDestination(cfg.function, submit)
        if cfg.type == "sqs":
            from router.destinations.sqs import SqsDestination

            return SqsDestination(cfg.queue_url, aws=config.aws)
        problems.append(
            f"{where}.type: destination type {cfg.type!r} is not supported yet; use file, http or function"
        )
        return None

    for name, fn in config.functions.items():
        dests = FunctionDestinations()
        if fn.async_.on_success is not None:
            dests.on_success = build(f"functions.{name}.async.on_success", fn.async_.on_success)
        if fn.async_.on_failure is not None:
            dests.on_failure = build(f"functions.{name}.async.on_failure", fn.async_.on_failure)
        out[name] = dests
    if problems:
        raise ConfigError(problems)
    return out
