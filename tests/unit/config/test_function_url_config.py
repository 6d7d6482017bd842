"""A function's ``url:``: read, and bad values refused with file:line (an unknown invoke_mode,
AWS_IAM without keys to check signatures with)."""

from __future__ import annotations

from typing import Any

CONFIG = """\
server: {{invoke_keys: {keys}}}
functions:
  f:
    runtime: python3.11
    handler: app.handler
    code: ./fn
    url:
{url}
routes: []
"""


def test_url_is_read(load: Any) -> None:
    text = CONFIG.format(keys="{}", url="      auth: NONE\n      cors: {allow_origins: ['*'], max_age: 60}")
    url = load(text).functions["f"].url
    assert (url.auth, url.invoke_mode, url.cors.allow_origins, url.cors.max_age) == ("NONE", "BUFFERED",
                                                                                     ["*"], 60)
    iam = load(CONFIG.format(keys="{AKID: s}", url="      auth: AWS_IAM")).functions["f"].url
    assert iam.auth == "AWS_IAM"
    assert iam.cors is None


def test_response_stream_is_read_and_a_bad_mode_says_where(load: Any, problems: Any) -> None:
    text = CONFIG.format(keys="{}", url="      auth: NONE\n      invoke_mode: RESPONSE_STREAM")
    url = load(text).functions["f"].url
    assert url.invoke_mode == "RESPONSE_STREAM"
    (line,) = problems(CONFIG.format(keys="{}", url="      auth: NONE\n      invoke_mode: STREAM"))
    assert line.startswith("router.yaml:9:"), line
    assert "functions.f.url.invoke_mode" in line
    assert "should be one of 'BUFFERED', 'RESPONSE_STREAM'" in line, line


def test_bad_url_settings_say_where(problems: Any) -> None:
    (line,) = problems(CONFIG.format(keys="{}", url="      auth: OPEN"))
    assert line.startswith("router.yaml:8:"), line
    assert "AWS_IAM" in line
    lines = problems(CONFIG.format(keys="{}", url="      auth: NONE\n      cors: {allow_methods: [TRACE]}"))
    assert any("allow_methods" in ln and "TRACE" in ln for ln in lines), lines
    (line,) = problems(CONFIG.format(keys="{}", url="      auth: AWS_IAM"))
    assert line.startswith("router.yaml:8:13: functions.f.url.auth: AWS_IAM needs server.invoke_keys"), line
