"""``state``: a URL, or a mapping with url, durability and write_timeout."""

from __future__ import annotations

from collections.abc import Callable

from router.config.models import RouterConfig

Load = Callable[..., RouterConfig]
Problems = Callable[..., list[str]]


def test_state_url_alone_keeps_the_safe_defaults(load: Load) -> None:
    state = load("state: sqlite:///s.db\n").state
    assert (state.url, state.durability, state.write_timeout) == ("sqlite:///s.db", "fsync", 5.0)
    assert load("version: 1\n").state.url == "sqlite:///state.db"


def test_state_mapping(load: Load) -> None:
    state = load("state: {url: 'postgresql://db/r', durability: normal, write_timeout: 500ms}\n").state
    assert (state.url, state.durability, state.write_timeout) == ("postgresql://db/r", "normal", 0.5)


def test_state_mistakes_are_reported_at_their_line(problems: Problems) -> None:
    assert problems("state:\n  url: sqlite:///s.db\n  durability: full\n  write_timeout: 0s\n") == [
        "router.yaml:3:15: state.durability: should be one of 'fsync', 'normal'",  # state values not echoed
        "router.yaml:4:18: state.write_timeout: should be more than 0",
    ]


def test_state_urls_run_would_refuse_are_refused(problems: Problems) -> None:
    assert problems("state: 'postgresql://router:pw@db:fivefour/r'\n") == [
        "router.yaml:1:8: state: not a database URL, got postgresql://...; "
        "use sqlite:///PATH or postgresql://HOST/DB",
    ]
    assert problems("state: 'sqlite://'\n") == [
        "router.yaml:1:8: state: SQLite needs a file path, got sqlite://; "
        "use sqlite:///relative/path.db or sqlite:////absolute/path.db",
    ]
