"""Node.js runtimes (``nodejsNN.x``): the command line Lambda starts ``node`` with (which ``node``:
``router.config.node``).

Lambda's Node bootstrap (``/var/runtime/bootstrap``) runs ``node --expose-gc --max-http-header-size 81920
[experimental-feature flags] [heap flags] /var/runtime/index.mjs``: the V8 heap is sized from
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` (new space a tenth of it, two semi-spaces, old space the rest)
unless ``NODE_OPTIONS`` already sizes it, and on Node 20 and 22 it turns off ``require()`` of ES modules
(and, on 22, module-type detection) unless ``NODE_OPTIONS`` turns them on. The router does the same.

``--expose-gc`` and the heap sizes are V8 flags: they change V8's flag hash, and V8 then rejects node's
embedded code cache of its built-in modules (each is compiled from source, ~10-15 ms of a cold start).
They act only when V8 starts, so the bootstrap puts them back to their defaults first thing
(``acceptBuiltinCodeCache`` in ``bootstrap/node/bootstrap.cjs``): same heap limits and ``gc``, cache accepted.
"""

from __future__ import annotations

from router.config.node import version_tuple

_HEAP_FLAGS = (
    "--max-semi-space-size", "--max_semi_space_size", "--max-old-space-size", "--max_old_space_size")


def node_flags(version: str, memory_mb: int, node_options: str) -> list[str]:
    """The flags Lambda's bootstrap gives ``node`` (before the entry script)."""
    flags = ["--expose-gc", "--max-http-header-size", "81920"]
    major, minor, _ = version_tuple(version)
    # require(esm): flag from 20.17 / 22.0; module-type detection: turned off by Lambda on 22 only.
    require_esm_flag = (major == 20 and minor >= 17) or major == 22
    if require_esm_flag and "--experimental-require-module" not in node_options:
        flags.append("--no-experimental-require-module")
    if major == 22 and "--experimental-detect-module" not in node_options:
        flags.append("--no-experimental-detect-module")
    if not any(flag in node_options for flag in _HEAP_FLAGS):
        new_space = memory_mb // 10
        flags += [f"--max-semi-space-size={new_space // 2}", f"--max-old-space-size={memory_mb - new_space}"]
    return flags
