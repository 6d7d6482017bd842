"""Versions and aliases (Lambda's): publish a function's code and config as an immutable numbered version,
resolve a qualifier (``$LATEST``, a version number, an alias of the config) to the version that runs, and
keep one invoker (its own execution environments) per version run on this replica.

Resolving an alias is a dict lookup and, for a weighted alias, one random draw: no I/O. The first
invocation of a version on a replica reads its code from the state store, extracts it into the local
cache (``router.core.package``) and starts its invoker; later ones find it in a dict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router.clock import Clock, SystemClock
from router.config.models import FunctionConfig, RouterConfig
from router.core import package
from router.errors import QualifierNotFound, RouterError, VersionError
from router.invokers.base import Invoker
from router.state.versions import VersionRow

if TYPE_CHECKING:
    from router.state.store import StateStore

log = logging.getLogger("router.versions")

LATEST = "$LATEST"
UNNAMED = "other"
"""The ``version`` label of a version no alias of the config names (keeps the label set bounded)."""

BuildInvoker = Callable[[str, FunctionConfig, Path, str], Invoker]
"""(function name, the version's config, its extracted code directory, version number) -> its invoker."""


@dataclass(frozen=True, slots=True)
class AliasRouting:
    """Where an alias sends invocations: ``version``, or ``extra`` for a share ``weight`` of them."""

    version: str
    extra: str | None = None
    weight: float = 0.0

    def pick(self, draw: Callable[[], float]) -> str:
        """The version one invocation runs; ``draw`` gives a uniform number in [0, 1)."""
        if self.extra is not None and draw() < self.weight:
            return self.extra
        return self.version

    def versions(self) -> tuple[str, ...]:
        return (self.version,) if self.extra is None else (self.version, self.extra)


def alias_table(config: RouterConfig) -> dict[str, dict[str, AliasRouting]]:
    """function -> alias -> routing, from the config's ``aliases``."""
    table: dict[str, dict[str, AliasRouting]] = {}
    for name, fn in config.functions.items():
        for alias, spec in fn.aliases.items():
            extra, weight = next(iter(spec.weights.items()), (None, 0.0))
            table.setdefault(name, {})[alias] = AliasRouting(
                str(spec.version), None if extra is None else str(extra), weight)
    return table


def config_snapshot(fn: FunctionConfig) -> str:
    """The part of a function's config a version keeps, as canonical JSON (compared to see whether
    anything changed since the last version)."""
    data = fn.model_dump(mode="json", by_alias=True, exclude={"aliases", "code"})
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class Versions:
    """The published versions and the config's aliases of every function, and the invokers of the
    versions run here. ``build`` makes a version's invoker; ``draw`` the weighted aliases' random number
    (a seeded ``random.Random().random`` in tests)."""

    def __init__(self, config: RouterConfig, store: StateStore, *, build: BuildInvoker,
                 draw: Callable[[], float] | None = None, cache: Path | None = None,
                 clock: Clock | None = None) -> None:
        self._config = config
        self._store = store
        self._build = build
        self._draw = draw or random.random
        self._cache = cache or package.cache_root()
        self._clock = clock or SystemClock()
        self._aliases = alias_table(config)
        self._named = self._named_versions()
        self._invokers: dict[tuple[str, str], Invoker] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def reconfigure(self, config: RouterConfig) -> None:
        """A reload: the aliases of ``config`` apply to the next invocations (versions stay as they are)."""
        self._config = config
        self._aliases = alias_table(config)
        self._named = self._named_versions()

    def _named_versions(self) -> dict[str, frozenset[str]]:
        return {fn: frozenset(v for routing in aliases.values() for v in routing.versions())
                for fn, aliases in self._aliases.items()}

    # --- resolution (no I/O) ----------------------------------------------------------------------------

    def resolve(self, function: str, qualifier: str) -> str | None:
        """The version an invocation of ``function:qualifier`` runs (None: ``$LATEST``). Raises
        ``QualifierNotFound`` for an alias the config does not have. A version number is returned as
        it is; ``invoker`` finds out whether it was published."""
        if qualifier == LATEST:
            return None
        if qualifier.isdigit():
            return str(int(qualifier))
        routing = self._aliases.get(function, {}).get(qualifier)
        if routing is None:
            raise QualifierNotFound(function, qualifier)
        return routing.pick(self._draw)

    def aliases(self, function: str) -> dict[str, AliasRouting]:
        return dict(self._aliases.get(function, {}))

    def metric_label(self, function: str, version: str) -> str:
        """``version`` when an alias of the config names it, else ``other``: a bounded label set."""
        return version if version in self._named.get(function, ()) else UNNAMED

    def arn(self, function: str, qualifier: str | None) -> str:
        base = self._config.aws.function_arn(function)
        return base if qualifier is None else f"{base}:{qualifier}"

    # --- invokers ---------------------------------------------------------------------------------------

    def ready(self, function: str, version: str) -> bool:
        """Whether the invoker of that version is made and started."""
        return (function, version) in self._invokers

    def invoker_now(self, function: str, version: str) -> Invoker:
        """The invoker of a version ``invoker`` has made ready."""
        return self._invokers[(function, version)]

    async def invoker(self, function: str, version: str) -> Invoker:
        """The started invoker of ``function`` version ``version``, made on first use. Raises
        ``QualifierNotFound`` when that version was never published, ``VersionError`` when its code
        cannot be used."""
        key = (function, version)
        found = self._invokers.get(key)
        if found is not None:
            return found
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._invokers.get(key)
            if found is not None:
                return found
            number = int(version)
            row = await self._store.get_version(function, number)
            code = None if row is None else await self._store.version_code(function, number)
            if row is None or code is None:
                raise QualifierNotFound(function, version)
            where = f"function '{function}' version {version}"
            code_dir = await asyncio.to_thread(package.extract, code, row.code_sha256, self._cache, where)
            try:
                fn = FunctionConfig.model_validate({**json.loads(row.config), "code": str(code_dir)})
            except ValueError as exc:
                raise VersionError(f"{where}: its stored config no longer loads ({exc}); publish a new "
                                   "version") from None
            invoker = self._build(function, fn, code_dir, version)
            try:
                await invoker.start()
            except BaseException as exc:
                await invoker.close()
                if isinstance(exc, RouterError) and not isinstance(exc, VersionError):
                    raise VersionError(f"{where}: cannot start: {exc}") from exc
                raise
            self._invokers[key] = invoker
            log.info("function '%s': version %s ready (code %s in %s)", function, version, row.code_sha256,
                     code_dir, extra={"function": function})
            return invoker

    async def close(self) -> None:
        """Close the invokers of the versions (their environments end)."""
        invokers, self._invokers = self._invokers, {}
        for invoker in invokers.values():
            try:
                await invoker.close()
            except Exception:
                log.exception("closing a version's invoker failed")

    # --- publish and list -------------------------------------------------------------------------------

    async def publish(self, function: str, description: str = "") -> tuple[VersionRow, bool]:
        """Snapshot ``function``'s code and config as its next version, or return the latest version
        when nothing changed; (row, created). Raises ``VersionError`` for a function that is not local."""
        fn = self._config.functions[function]
        if fn.kind != "local" or fn.code is None:
            raise VersionError(
                f"function '{function}': only local functions have versions (it is an {fn.kind} target, "
                "whose code the router does not hold); publish versions where its code runs")
        root = (self._config.config_dir / fn.code).resolve()
        code = await asyncio.to_thread(package.zip_directory, root, f"function '{function}'")
        row, created = await self._store.publish_version(
            function=function, code=code, code_sha256=package.code_sha256(code), config=config_snapshot(fn),
            description=description, now=self._clock.time())
        if created:
            log.info("function '%s': published version %d (CodeSha256 %s)", function, row.version,
                     row.code_sha256, extra={"function": function})
        return row, created

    async def list(self, function: str) -> list[VersionRow]:
        return await self._store.list_versions(function)

    async def exists(self, function: str, qualifier: str) -> bool:
        """Whether ``qualifier`` names a published version or an alias of ``function`` ($LATEST always)."""
        if qualifier == LATEST:
            return True
        if qualifier.isdigit():
            return await self.get(function, int(qualifier)) is not None
        return qualifier in self._aliases.get(function, {})

    async def get(self, function: str, version: int) -> VersionRow | None:
        return await self._store.get_version(function, version)

    async def check_aliases(self, config: RouterConfig | None = None) -> None:
        """At start (and before a reload, with the new ``config``): every version an alias names is
        published, else a ``RouterError`` saying which."""
        table = self._aliases if config is None else alias_table(config)
        if not table:
            return
        published: dict[str, set[str]] = {}
        for row in await self._store.list_versions():
            published.setdefault(row.function, set()).add(str(row.version))
        problems = []
        for function, aliases in table.items():
            have = published.get(function, set())
            for alias, routing in aliases.items():
                for version in routing.versions():
                    if version not in have:
                        listed = ", ".join(sorted(have, key=int)) or "none"
                        problems.append(
                            f"functions.{function}.aliases.{alias}: version {version} is not published "
                            f"(published: {listed}); run 'router publish {function}' or name a published "
                            "version")
        if problems:
            raise RouterError("; ".join(problems))
