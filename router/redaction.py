"""The process's secrets and their redaction: every value the config read from the environment.

DESIGN §9a: every value interpolated from the environment is a secret wherever it lands. The config
loader records which environment values ended up in text settings (``RouterConfig.secrets``: value ->
variable name); ``install`` makes them known to this process, and ``redact`` replaces each of them, in
any text, by ``${NAME}``. Every output path uses it: log lines (``router.logs`` redacts what it writes),
error results (``Result.error``), URLs shown in messages (``invokers.http.safe_url``) and the CLI.

A value is also recognised in the forms it takes on its way out: JSON-escaped (log lines) and
percent-encoded (URLs). Values shorter than ``MIN_LENGTH`` are not redacted: replacing every "ab" in
every line would hide the logs, not a secret.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from urllib.parse import quote

MIN_LENGTH = 4
"""Shortest value treated as a secret."""


class Redactor:
    """Replaces known secret values in text by ``${NAME}``; thread-safe, cheap when it knows none."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # a form of a secret value -> ${NAME}
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secrets: Mapping[str, str]) -> None:
        """Learn ``value -> variable name`` pairs (values already known keep their first name)."""
        with self._lock:
            names = dict(self._names)
            for value, name in secrets.items():
                if len(value) < MIN_LENGTH:
                    continue
                for form in _forms(value):
                    names.setdefault(form, "${" + name + "}")
            if len(names) == len(self._names):
                return
            # Longest first: a secret containing another is replaced whole.
            alternatives = sorted(names, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(a) for a in alternatives))
            self._names = names

    def clear(self) -> None:
        """Forget every secret (tests)."""
        with self._lock:
            self._names = {}
            self._pattern = None

    @property
    def active(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced by ``${NAME}``."""
        pattern, names = self._pattern, self._names
        if pattern is None:
            return text
        return pattern.sub(lambda m: names[m.group(0)], text)


def _forms(value: str) -> set[str]:
    """The value as written, JSON-escaped (as a log line shows it) and percent-encoded (in a URL)."""
    return {
        value,
        json.dumps(value)[1:-1],  # ASCII escapes, as the JSON log lines write strings
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value, safe="/:@!$&'()*+,;="),  # as yarl and aiohttp leave a URL path
    }


REDACTOR = Redactor()
"""The process-wide redactor, fed by ``install``."""


def install(secrets: Mapping[str, str]) -> None:
    """Make the secrets of a loaded config (``RouterConfig.secrets``) known to this process."""
    REDACTOR.add(secrets)


def redact(text: str) -> str:
    """``text`` with every secret of this process replaced by ``${NAME}``."""
    return REDACTOR(text)
