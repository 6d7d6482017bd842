"""What changed between two loaded configs, in the units a reload restarts: functions and routes by name,
and the settings that only a restart can change.

A function or route is *changed* when any of its settings differs (values read from the environment
included: the loader has already put them in). A route pointing at a changed function is not changed
itself: the function's environments are recycled, the route keeps running. Settings of the whole router
(``server``, ``state``, ``aws``, ``limits``, ``async_queue``) cannot change while it runs: the listeners,
the state store, the account limit and the async queue are built once. ``logging`` can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from router.config.models import RouterConfig

RESTART_ONLY = ("server", "state", "aws", "limits", "async_queue")
"""Top-level settings a reload cannot apply: a change to one of them refuses the reload."""


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """The difference between a running config and a new one."""

    functions_added: tuple[str, ...] = ()
    functions_removed: tuple[str, ...] = ()
    functions_changed: tuple[str, ...] = ()
    routes_added: tuple[str, ...] = ()
    routes_removed: tuple[str, ...] = ()
    routes_changed: tuple[str, ...] = ()
    restart_only: tuple[str, ...] = ()  # top-level settings that changed but need a restart
    logging_changed: bool = False

    @property
    def empty(self) -> bool:
        """Nothing to do: the new config is the running one."""
        return not (self.functions_added or self.functions_removed or self.functions_changed
                    or self.routes_added or self.routes_removed or self.routes_changed
                    or self.restart_only or self.logging_changed)

    @property
    def applicable(self) -> bool:
        """Whether a reload can apply it (no setting that needs a restart changed)."""
        return not self.restart_only

    def refusal(self) -> str:
        """Why a reload cannot apply it (empty when it can)."""
        if not self.restart_only:
            return ""
        return (f"{', '.join(self.restart_only)} changed: only a restart applies "
                f"{'this setting' if len(self.restart_only) == 1 else 'these settings'}; the running config "
                "is kept (restart the router, or undo the change to reload the rest)")

    def summary(self) -> str:
        """One line for the log: what a reload changes."""
        if self.empty:
            return "no change"
        parts: list[str] = []
        for what, names in (
            ("functions added", self.functions_added), ("functions removed", self.functions_removed),
            ("functions changed", self.functions_changed), ("routes added", self.routes_added),
            ("routes removed", self.routes_removed), ("routes changed", self.routes_changed),
            ("restart needed for", self.restart_only),
        ):
            if names:
                parts.append(f"{what}: {', '.join(names)}")
        if self.logging_changed:
            parts.append("logging changed")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What a reload came to: ``applied`` (``summary`` says what changed), ``unchanged``, or ``refused``
    (``problems``: the file's errors as FILE:LINE:COL lines, or why only a restart can apply it)."""

    result: str
    generation: int
    summary: str = ""
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"result": self.result, "generation": self.generation, "summary": self.summary,
                "problems": list(self.problems)}


def diff(old: RouterConfig, new: RouterConfig) -> ConfigChange:
    """What a reload from ``old`` to ``new`` changes."""
    functions = _by_name(old.functions, new.functions)
    routes = _by_name({r.name: r for r in old.routes}, {r.name: r for r in new.routes})
    restart_only = tuple(
        key for key in RESTART_ONLY if _dump(getattr(old, key)) != _dump(getattr(new, key))
    )
    if old.config_dir != new.config_dir:  # relative code dirs and the SQLite path resolve from it
        restart_only += ("the config file's directory",)
    return ConfigChange(
        functions_added=functions[0], functions_removed=functions[1], functions_changed=functions[2],
        routes_added=routes[0], routes_removed=routes[1], routes_changed=routes[2],
        restart_only=restart_only, logging_changed=_dump(old.logging) != _dump(new.logging),
    )


def _by_name(old: Mapping[str, BaseModel], new: Mapping[str, BaseModel]) -> tuple[tuple[str, ...], ...]:
    added = _sorted(n for n in new if n not in old)
    removed = _sorted(n for n in old if n not in new)
    changed = _sorted(n for n in new if n in old and _dump(old[n]) != _dump(new[n]))
    return added, removed, changed


def _dump(value: Any) -> Any:
    """A comparable form of a setting: a model's full dump (defaults included), else the value."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _sorted(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names))
