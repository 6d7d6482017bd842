"""What a reload would change: functions and routes by name, and the settings only a restart applies."""

from __future__ import annotations

from collections.abc import Callable

from router.config.diff import diff
from router.config.models import RouterConfig

from .conftest import EXAMPLE, EXAMPLE_ENV

Load = Callable[..., RouterConfig]


def test_the_same_file_loaded_twice_is_no_change(load: Load) -> None:
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(EXAMPLE, EXAMPLE_ENV))
    assert change.empty
    assert change.applicable
    assert change.summary() == "no change"


def test_a_function_setting_changes_the_function_not_the_routes_that_call_it(load: Load) -> None:
    new = EXAMPLE.replace("    timeout: 30s\n", "    timeout: 31s\n")
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(new, EXAMPLE_ENV))
    assert change.functions_changed == ("resize",)
    assert change.routes_changed == ()
    assert change.applicable
    assert change.summary() == "functions changed: resize"


def test_an_environment_value_read_into_a_setting_counts_as_a_change(load: Load) -> None:
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(EXAMPLE, {**EXAMPLE_ENV, "BILLING_TOKEN": "rotated"}))
    assert change.functions_changed == ("billing",)
    assert change.routes_changed == ()


def test_routes_added_removed_and_changed_by_name(load: Load) -> None:
    new = (EXAMPLE
           .replace("  - name: every-5m\n    source: {type: schedule, rate: 5m}\n",
                    "  - name: every-5m\n    source: {type: schedule, rate: 10m}\n")
           .replace("  - name: nightly\n", "  - name: nightly-renamed\n"))
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(new, EXAMPLE_ENV))
    assert change.routes_changed == ("every-5m",)
    assert change.routes_added == ("nightly-renamed",)
    assert change.routes_removed == ("nightly",)
    assert change.functions_added == change.functions_removed == change.functions_changed == ()
    assert change.applicable
    assert change.summary() == ("routes added: nightly-renamed; routes removed: nightly; "
                                "routes changed: every-5m")


def test_functions_added_and_removed(load: Load) -> None:
    new = EXAMPLE.replace("  thumbs:                 # real AWS Lambda function\n"
                          "    lambda: {function_name: thumbs, qualifier: prod}\n",
                          "  thumbs2:\n    lambda: {function_name: thumbs, qualifier: prod}\n")
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(new, EXAMPLE_ENV))
    assert change.functions_added == ("thumbs2",)
    assert change.functions_removed == ("thumbs",)


def test_settings_of_the_whole_router_need_a_restart(load: Load) -> None:
    new = EXAMPLE.replace("  port: 8080 ", "  port: 8081 ").replace("  region: us-east-1\n",
                                                                    "  region: eu-west-1\n")
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(new, EXAMPLE_ENV))
    assert change.restart_only == ("server", "aws")
    assert not change.applicable
    assert not change.empty
    assert change.refusal() == ("server, aws changed: only a restart applies these settings; the running "
                                "config is kept (restart the router, or undo the change to reload the rest)")


def test_logging_can_change_while_running(load: Load) -> None:
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(EXAMPLE + "logging: {level: debug}\n", EXAMPLE_ENV))
    assert change.logging_changed
    assert change.applicable
    assert not change.empty
    assert change.restart_only == ()
    assert change.summary() == "logging changed"


def test_turning_the_file_watch_on_or_off_needs_a_restart(load: Load) -> None:
    watching = EXAMPLE.replace("  max_body: 6MB\n", "  max_body: 6MB\n  watch_config: true\n")
    for old, new in ((EXAMPLE, watching), (watching, EXAMPLE)):
        change = diff(load(old, EXAMPLE_ENV), load(new, EXAMPLE_ENV))
        assert change.restart_only == ("server",)
        assert not change.applicable
    assert load(watching, EXAMPLE_ENV).server.watch_config
    assert not load(EXAMPLE, EXAMPLE_ENV).server.watch_config
