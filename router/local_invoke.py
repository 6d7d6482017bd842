"""``router invoke FUNCTION``: run one function once, like ``sam local invoke``; no server, no state."""

from __future__ import annotations

import logging
from typing import TextIO

import aiohttp

from router.config.models import RouterConfig
from router.errors import FunctionNotFound
from router.invocation import Invocation
from router.invokers.base import Invoker
from router.invokers.factory import InvokerParts, build_invoker
from router.logs import setup_logging
from router.metrics import Metrics
from router.redaction import redact
from router.suggest import did_you_mean

log = logging.getLogger("router.invoke")


async def invoke_once(
    config: RouterConfig, function: str, payload: bytes, *, out: TextIO, err: TextIO
) -> int:
    """Invoke ``function`` once with ``payload``; print the result on ``out``, logs on stderr.

    Exit status: 0 on success, 1 on a function error or timeout, 2 on a usage error.
    """
    setup_logging(config.logging.level, "text")
    if function not in config.functions:
        print(FunctionNotFound(function, did_you_mean(function, list(config.functions))), file=err)
        return 2
    metrics = Metrics()
    runtime_api = None
    templates = None
    async with aiohttp.ClientSession() as session:
        if config.functions[function].kind == "local":
            from router.runtime.api import RuntimeApiServer
            from router.runtime.template import TemplateManager

            runtime_api = RuntimeApiServer()
            await runtime_api.start()
            templates = TemplateManager()
        parts = InvokerParts(
            config=config, metrics=metrics, http_session=session, runtime_api=runtime_api,
            templates=templates,
        )
        invoker: Invoker = build_invoker(function, parts)
        try:
            await invoker.start()
            result = await invoker.invoke(Invocation(function=function, payload=payload, source="cli"))
        finally:
            await invoker.close()
            if templates is not None:
                await templates.close()
            if runtime_api is not None:
                await runtime_api.close()
    out.write(redact(result.payload.decode("utf-8", "replace")) + "\n")
    out.flush()
    return 0 if result.ok else 1
