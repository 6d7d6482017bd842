"""Where a function's layers and installed dependencies go on the search paths of its runtime.

Lambda extracts a function's layers into ``/opt``, a later layer over an earlier one, and its runtimes
search ``/opt``'s subdirectories (the developer guide's "Layer paths for each Lambda runtime"):

- Python: ``sys.path`` is the code directory, then ``/opt/python/lib/python3.X/site-packages``, then
  ``/opt/python``, then the runtime's own packages;
- Node.js: ``NODE_PATH`` is ``/opt/nodejs/nodeNN/node_modules:/opt/nodejs/node_modules:...:/var/task``
  (the code directory's own ``node_modules`` is found first by Node's resolution anyway);
- every runtime: ``/opt/bin`` at the end of ``PATH``, ``/opt/lib`` at the end of ``LD_LIBRARY_PATH``
  (after ``$LAMBDA_TASK_ROOT`` and ``$LAMBDA_TASK_ROOT/lib``).

The router has no ``/opt`` (it runs unprivileged, several functions share the machine): each layer stays
a directory of its own and its subdirectories go on the same variables, a later layer's before an
earlier one's, so the later layer wins for a module both provide, as after Lambda's merge. Dependencies
the router installed (``router.runtime.deps``) sit right after what they belong to: the code
directory's right after the code directory (``sam build`` puts them in it), a layer's with its layer.
Only directories that exist are listed. Pure: the caller stats nothing; ``exists`` is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer directory, with the directories its dependencies were installed into (may be none)."""

    root: Path
    installed: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchPaths:
    """The entries a function's environment gets, in search order (first wins)."""

    python: list[str] = field(default_factory=list)  # PYTHONPATH
    node: list[str] = field(default_factory=list)  # NODE_PATH
    bin: list[str] = field(default_factory=list)  # appended to PATH
    lib: list[str] = field(default_factory=list)  # LD_LIBRARY_PATH, after the code dir's


def search_paths(*, python_version: str | None, node_major: int | None, code_dir: Path,
                 code_installed: Sequence[Path], layers: Sequence[Layer],
                 exists: Callable[[Path], bool]) -> SearchPaths:
    """The search-path entries for a function whose code is in ``code_dir`` (with its own dependencies
    installed into ``code_installed``) and whose layers are ``layers`` in config order.

    ``python_version`` is ``"3.12"`` for a Python function, ``node_major`` 20 for a Node.js one.
    """
    out = SearchPaths()
    later_first = list(reversed(layers))
    if python_version is not None:
        out.python.append(str(code_dir))
        out.python.extend(str(p) for p in code_installed if exists(p))
        for layer in later_first:
            for sub in (layer.root / "python" / "lib" / f"python{python_version}" / "site-packages",
                        layer.root / "python"):
                if exists(sub):
                    out.python.append(str(sub))
            out.python.extend(str(p) for p in layer.installed if exists(p))
    if node_major is not None:
        out.node.extend(str(p) for p in code_installed if exists(p))
        for layer in later_first:
            for sub in (layer.root / "nodejs" / f"node{node_major}" / "node_modules",
                        layer.root / "nodejs" / "node_modules"):
                if exists(sub):
                    out.node.append(str(sub))
            out.node.extend(str(p) for p in layer.installed if exists(p))
        out.node.append(str(code_dir))
    for layer in later_first:
        if exists(layer.root / "bin"):
            out.bin.append(str(layer.root / "bin"))
        if exists(layer.root / "lib"):
            out.lib.append(str(layer.root / "lib"))
    return out
