"""Aliases in the config (``functions.NAME.aliases``) and routes naming ``function: name:qualifier``."""

from __future__ import annotations

from collections.abc import Callable

from router.config.models import RouterConfig

from .conftest import BASE

Problems = Callable[..., list[str]]
Load = Callable[..., RouterConfig]


def _route(function: str) -> str:
    return f"routes:\n  - name: a\n    function: {function}\n    source: {{type: webhook, path: /a}}\n"


def test_an_alias_with_a_weighted_version_loads(problems: Problems, load: Load) -> None:
    config = load(BASE + "    aliases:\n      prod: {version: 3, weights: {4: 0.1}, description: live}\n"
                  + _route("resize:prod"))
    alias = config.functions["resize"].aliases["prod"]
    assert (alias.version, alias.weights, alias.description) == (3, {4: 0.1}, "live")
    assert config.routes[0].function == "resize:prod"


def test_routes_may_name_a_version_or_latest(load: Load) -> None:
    assert load(BASE + _route("resize:7")).routes[0].function == "resize:7"
    assert load(BASE + _route("'resize:$LATEST'")).routes[0].function == "resize:$LATEST"


def test_a_route_naming_an_unknown_alias_says_which_exist(problems: Problems) -> None:
    assert problems(BASE + "    aliases:\n      prod: {version: 1}\n" + _route("resize:live")) == [
        "router.yaml:10:15: routes[0].function: function 'resize' has no alias 'live' (its aliases: prod); "
        "write name:ALIAS with an alias under functions.resize.aliases, name:VERSION or name:$LATEST"
    ]


def test_a_route_naming_an_unknown_function_with_a_qualifier(problems: Problems) -> None:
    assert problems(BASE + _route("resise:prod")) == [
        "router.yaml:8:15: routes[0].function: unknown function 'resise'; did you mean 'resize'?"
    ]


def test_weights_take_one_other_version_from_0_to_1(problems: Problems) -> None:
    out = problems(BASE + "    aliases:\n      prod: {version: 3, weights: {4: 0.1, 5: 0.2}}\n"
                   "      beta: {version: 3, weights: {3: 0.5}}\n"
                   "      gamma: {version: 3, weights: {4: 1.5}}\n")
    assert len(out) == 3
    assert out[0].startswith("router.yaml:7:")
    assert "weights takes one version" in out[0]
    assert out[1].startswith("router.yaml:8:")
    assert "version 3 is the alias's own version" in out[1]
    assert out[2].startswith("router.yaml:9:")
    assert "must be from 0 to 1, got 1.5" in out[2]


def test_alias_names_are_lambdas(problems: Problems) -> None:
    out = problems(BASE + "    aliases:\n      '123': {version: 1}\n")
    assert len(out) == 1
    assert "not all digits, got '123'" in out[0]
    assert out[0].startswith("router.yaml:7:")


def test_aliases_are_for_local_functions(problems: Problems) -> None:
    out = problems("functions:\n  remote:\n    http: {url: 'http://example.com/'}\n"
                   "    aliases: {prod: {version: 1}}\n")
    assert len(out) == 1
    assert "aliases are for local functions" in out[0]



def test_an_async_route_may_name_an_alias(load: Load) -> None:
    config = load(BASE + "    aliases:\n      prod: {version: 1}\n"
                  "routes:\n  - name: a\n    function: resize:prod\n    invocation: async\n"
                  "    source: {type: webhook, path: /a}\n")
    assert config.routes[0].invocation == "async"
