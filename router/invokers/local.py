"""LocalInvoker: runs a local function (runtime python3.X or provided) in execution environments."""

from __future__ import annotations

from pathlib import Path

from router.config.models import AwsConfig, FunctionConfig
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.runtime.api import RuntimeApiServer
from router.runtime.capacity import Capacity
from router.runtime.pool import EnvironmentPool
from router.runtime.proctree import Watchdog
from router.runtime.template import TemplateManager


class LocalInvoker:
    """The ``Invoker`` of a local function: one ``EnvironmentPool`` of worker processes.

    ``invoke`` may be called concurrently; each invocation gets its own environment (warm ones reused
    most-recent-first, else a cold start, sized to the machine by ``capacity``: see
    ``router.runtime.pool``). Handler errors, timeouts and crashed workers become results.
    """

    def __init__(
        self,
        name: str,
        config: FunctionConfig,
        *,
        code_dir: Path,
        aws: AwsConfig,
        metrics: Metrics,
        runtime_api: RuntimeApiServer,
        arn: str,
        capacity: Capacity | None = None,
        templates: TemplateManager | None = None,
        watchdog: Watchdog | None = None,
        version: str = "$LATEST",
    ) -> None:
        self.name = name
        self.pool = EnvironmentPool(
            name, config, code_dir=code_dir, aws=aws, metrics=metrics, runtime_api=runtime_api, arn=arn,
            capacity=capacity, templates=templates, watchdog=watchdog, version=version,
        )

    async def start(self) -> None:
        """Check code and runtime (raises ``EnvironmentStartError``); start ``provisioned`` environments."""
        await self.pool.start()

    async def invoke(self, invocation: Invocation) -> Result:
        return await self.pool.invoke(invocation)

    async def close(self) -> None:
        """Kill every environment (SIGTERM, SIGKILL after a grace) and stop background work."""
        await self.pool.close()
