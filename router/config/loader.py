"""Load the YAML config: parse with positions, interpolate ``${VAR}``, validate, cross-check.

Every problem found is reported at once in one :class:`~router.errors.ConfigError`, one line each,
``FILE:LINE:COL: path: message``. This is plain synchronous code meant for start-up and
``router validate``; from a running event loop call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from router.config.crosscheck import cross_check
from router.config.models import RouterConfig
from router.config.problems import START, TOP_LEVEL, Problem, render_all
from router.config.validation import secret_values, validate
from router.config.yaml_source import YamlProblem, parse
from router.errors import ConfigError


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> RouterConfig:
    """Read and validate the config file at ``path``; ``env`` defaults to ``os.environ``.

    Relative paths in the config are relative to the directory ``path`` names (``config.config_dir``;
    its own symlinks resolved, not the file's).
    """
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{filename}:1:1: {TOP_LEVEL}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{filename}:1:1: {TOP_LEVEL}: is a directory, expected a YAML file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{filename}:1:1: {TOP_LEVEL}: not UTF-8 text ({exc.reason})"]) from None
    except OSError as exc:
        raise ConfigError([f"{filename}:1:1: {TOP_LEVEL}: cannot read the file ({exc.strerror})"]) from None
    # The directory the path names, not the one a symlinked file points into: a Kubernetes ConfigMap's
    # file is a link into a directory each update replaces, and a reload must not see it move.
    return load_config_text(text, filename, env, config_dir=Path(path).absolute().parent.resolve())


def load_config_text(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    *,
    config_dir: Path | None = None,
) -> RouterConfig:
    """Validate config ``text``; ``filename`` only names it in messages.

    ``config_dir`` (default: the current directory) is what relative paths are resolved against.
    """
    base = (config_dir or Path.cwd()).resolve()
    try:
        doc = parse(text, os.environ if env is None else env)
    except YamlProblem as exc:
        raise ConfigError(render_all([exc.problem], filename)) from None
    problems = list(doc.problems)  # interpolation, duplicate keys, unknown tags
    config, invalid = validate(doc)
    reported = {p.path for p in problems}
    problems += [p for p in invalid if p.path not in reported]
    reported |= {p.path for p in invalid}
    problems += [p for p in cross_check(doc, base) if p.path not in reported]
    if problems:
        raise ConfigError(render_all(problems, filename))
    if config is None:  # pragma: no cover - validation failed without a problem: cannot happen
        raise ConfigError([Problem(START, TOP_LEVEL, "invalid configuration").render(filename)])
    config._config_dir = base
    for fn in config.functions.values():  # layers resolve from the config file's directory, as code
        fn.layers = [str((base / Path(layer).expanduser()).resolve()) for layer in fn.layers]
    config._secrets = secret_values(doc)
    return config

