"""Which interpolated values are secrets (``RouterConfig.secrets``): environment text in text settings;
not defaults written in the file, nor numbers, booleans, durations or fixed words."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from router.config.interpolate import interpolate
from router.config.models import RouterConfig

from .conftest import BASE

Load = Callable[..., RouterConfig]


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        ("${TOKEN}", [("TOKEN", "t0k")]),
        ("https://hooks.example/services/${TOKEN}", [("TOKEN", "t0k")]),
        ("${UNSET:-default}", []),  # written in the file: not from the environment
        ("${TOKEN:-default}", [("TOKEN", "t0k")]),
        ("${TOKEN:+other}", []),  # VAR's value is not in the result
        ("${UNSET:-${TOKEN}}", [("TOKEN", "t0k")]),
        ("${EMPTY}", []),
    ],
)
def test_interpolation_records_the_environment_values_it_used(text: str,
                                                              secrets: list[tuple[str, str]]) -> None:
    assert interpolate(text, {"TOKEN": "t0k", "EMPTY": ""}).secrets == secrets


def test_secrets_are_the_environment_values_of_text_settings(load: Load) -> None:
    config = load(
        BASE
        + "    environment: {DB_PASSWORD: '${DB_PASSWORD}'}\n"
        + "  hook:\n"
        + "    http: {url: 'https://hooks.example/services/${SLACK}'}\n"
        + "server: {port: '${PORT}', max_body: '${MAX_BODY}', invoke_api: '${INVOKE_API}'}\n"
        + "logging: {level: '${LEVEL}'}\n"
        + "state: {url: 'sqlite:///state.db', write_timeout: '${WRITE_TIMEOUT}'}\n",
        {"SLACK": "T00/B00/xyzsecret", "DB_PASSWORD": "hunter22", "PORT": "18080", "MAX_BODY": "1MB",
         "INVOKE_API": "true", "LEVEL": "debug", "WRITE_TIMEOUT": "2s"},
    )
    assert config.secrets == {"T00/B00/xyzsecret": "SLACK", "hunter22": "DB_PASSWORD"}
