"""Builds the invoker of a function by its kind (``local``, ``http``, ``lambda``); the one place that knows
which class serves which kind, used by ``router run`` and ``router invoke`` alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from router.config.models import FunctionConfig, RouterConfig
from router.invokers.base import Invoker
from router.metrics import Metrics

if TYPE_CHECKING:
    from router.runtime.api import RuntimeApiServer
    from router.runtime.capacity import Capacity
    from router.runtime.proctree import Watchdog
    from router.runtime.template import TemplateManager


@dataclass(frozen=True, slots=True)
class InvokerParts:
    """What invokers share: ``runtime_api`` serves local environments; ``capacity`` sizes them (None: one
    per invocation), ``templates`` forks them (None: every one is exec'd), ``watchdog`` ends them if the
    router dies (None: each worker dies with the router by its parent-death signal, its children do not)."""

    config: RouterConfig
    metrics: Metrics
    http_session: aiohttp.ClientSession
    runtime_api: RuntimeApiServer | None = None
    capacity: Capacity | None = None
    templates: TemplateManager | None = None
    watchdog: Watchdog | None = None


def _local(name: str, fn: FunctionConfig, parts: InvokerParts) -> Invoker:
    from router.invokers.local import LocalInvoker  # the runtime (and its bootstraps) only when used

    assert fn.code is not None
    assert parts.runtime_api is not None
    config = parts.config
    return LocalInvoker(
        name, fn, code_dir=(config.config_dir / fn.code).resolve(), aws=config.aws, metrics=parts.metrics,
        runtime_api=parts.runtime_api, arn=config.aws.function_arn(name), capacity=parts.capacity,
        templates=parts.templates, watchdog=parts.watchdog,
    )


def build_version_invoker(name: str, fn: FunctionConfig, code_dir: Path, version: str,
                          parts: InvokerParts) -> Invoker:
    """The invoker of a published version of local function ``name``: its own environments, running the
    version's ``fn`` config and its extracted ``code_dir``, invoked as ``ARN:version``."""
    from router.invokers.local import LocalInvoker

    assert parts.runtime_api is not None
    config = parts.config
    return LocalInvoker(
        name, fn, code_dir=code_dir, aws=config.aws, metrics=parts.metrics, runtime_api=parts.runtime_api,
        arn=f"{config.aws.function_arn(name)}:{version}", capacity=parts.capacity, templates=parts.templates,
        watchdog=parts.watchdog, version=version,
    )


def _http(name: str, fn: FunctionConfig, parts: InvokerParts) -> Invoker:
    from router.invokers.http import HttpInvoker

    return HttpInvoker(name, fn, session=parts.http_session)


def _lambda(name: str, fn: FunctionConfig, parts: InvokerParts) -> Invoker:
    from router.invokers.lambda_ import LambdaInvoker  # aiobotocore only when a function needs it

    return LambdaInvoker(name, fn, aws=parts.config.aws)


INVOKERS: dict[str, Callable[[str, FunctionConfig, InvokerParts], Invoker]] = {
    "local": _local, "http": _http, "lambda": _lambda,
}
"""The invoker class of each function kind (``FunctionConfig.kind``)."""


def build_invoker(name: str, parts: InvokerParts) -> Invoker:
    """The invoker of function ``name`` of ``parts.config``."""
    fn = parts.config.functions[name]
    return INVOKERS[fn.kind](name, fn, parts)
