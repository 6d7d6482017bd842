"""functions.NAME.logging: Lambda's LoggingConfig (log_format, application_log_level, system_log_level)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config.loader import load_config
from router.errors import ConfigError


def write(tmp_path: Path, logging: str) -> Path:
    config = tmp_path / "router.yaml"
    config.write_text(f"""version: 1
functions:
  api:
    runtime: python3.11
    handler: app.handler
    code: .
    logging: {logging}
""")
    return config


def test_default_is_text_without_levels(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("version: 1\nfunctions:\n  api: {runtime: python3.11, handler: app.handler, code: .}\n")
    logging = load_config(config, env={}).functions["api"].logging
    assert logging.log_format == "Text"
    assert (logging.application_log_level, logging.system_log_level) == (None, None)


def test_json_with_levels(tmp_path: Path) -> None:
    config = write(tmp_path, "{log_format: JSON, application_log_level: DEBUG, system_log_level: WARN}")
    logging = load_config(config, env={}).functions["api"].logging
    assert (logging.log_format, logging.application_log_level, logging.system_log_level) == (
        "JSON", "DEBUG", "WARN")


def test_a_level_with_text_is_refused_with_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path, "{application_log_level: DEBUG, system_log_level: INFO}")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert (f"{config}:7:14: functions.api.logging: application_log_level and system_log_level need "
            "log_format: JSON (Lambda filters log levels only in JSON format), got log_format: Text; "
            "add log_format: JSON or remove the level") in str(caught.value)


@pytest.mark.parametrize("logging", [
    "{log_format: json}", "{log_format: JSON, application_log_level: VERBOSE}",
    "{log_format: JSON, system_log_level: ERROR}", "{format: JSON}"])
def test_unknown_values_are_refused_with_file_and_line(tmp_path: Path, logging: str) -> None:
    config = write(tmp_path, logging)
    with pytest.raises(ConfigError, match=rf"{config}:7:\d+: functions\.api\.logging"):
        load_config(config, env={})
