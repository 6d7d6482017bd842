"""Turn the config's ``state:`` URL into a SQLAlchemy async engine URL (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}
_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg", "postgres+asyncpg"}


def redact(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***``; safe to log and to put in errors."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparsable URL>"
    return parsed.render_as_string(hide_password=True)


def engine_url(url: str, base_dir: Path) -> URL:
    """Map ``url`` to the async driver URL.

    ``sqlite:///rel/path`` is relative to ``base_dir``, ``sqlite:////abs/path`` absolute;
    ``postgresql://`` and ``postgres://`` use asyncpg. Raises ``ValueError`` with a user-facing message.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        scheme = url.split(":", 1)[0]
        raise ValueError(
            f"state: not a database URL, got {scheme}://...; use sqlite:///PATH or postgresql://HOST/DB"
        ) from None
    driver = parsed.drivername
    if driver in _SQLITE_DRIVERS:
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ValueError(
                f"state: SQLite needs a file path, got {redact(parsed)}; "
                "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = Path(database)
        if not path.is_absolute():
            path = base_dir / path
        return parsed.set(drivername="sqlite+aiosqlite", database=str(path))
    if driver in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"state: unsupported database, got {driver}://...; use sqlite:///PATH or postgresql://HOST/DB"
    )


def dialect_of(url: URL) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return url.get_backend_name()
