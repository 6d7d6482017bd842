"""``router validate`` refuses what ``router run`` would refuse, with the same FILE:LINE:COL lines, and
start-up failures name their real cause (issue 9, item 11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.router_process import router


def test_validate_refuses_what_run_refuses_with_the_same_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "version: 1\n"
        "state: 'postgresql://router:pw@db:fivefour/r'\n"
        "server:\n"
        "  port: 8080\n"
        "  metrics_port: 8080\n"
        "  max_body: 0\n"
        "functions:\n"
        "  remote:\n"
        "    http: {url: 'http//billing/invoke'}\n"
        "  far:\n"
        "    lambda: {function_name: 'arn:aws:lambda:us-east-1:12:function:x'}\n"
        "routes:\n"
        "  - name: hook\n"
        "    source: {type: webhook, path: '/hooks/{id'}\n"
        "    function: remote\n"
        "  - name: clicks\n"
        "    source: {type: kinesis, stream_arn: 'arn:aws:kinesis:us-east-1:stream/clicks'}\n"
        "    function: remote\n"
        "  - name: jobs\n"
        "    source: {type: sqs, queue_url: 'sqs.us-east-1.amazonaws.com/1/q'}\n"
        "    function: remote\n"
    )
    v = router("validate", str(cfg))
    assert v.returncode == 1, v.stdout
    lines = v.stderr.strip().splitlines()
    expected = [
        (2, "state: not a database URL, got postgresql://..."),
        (5, "server.metrics_port: metrics_port must be another port than server.port (both 8080)"),
        (6, "server.max_body: should be greater than 0"),
        (9, "functions.remote.http.url: must be an http:// or https:// URL, got no scheme"),
        (11, "functions.far.lambda.function_name: must be a function name"),
        (14, "routes[0].source.path: invalid path: unbalanced '{' or '}'"),
        (17, "routes[1].source.stream_arn: not a Kinesis stream ARN"),
        (20, "routes[2].source.queue_url: must be an http:// or https:// URL, got no scheme"),
    ]
    for line_no, text in expected:
        assert any(line.startswith(f"{cfg}:{line_no}:") and text in line for line in lines), (text, lines)
    assert len(lines) == len(expected), lines
    r = router("run", "--config", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == lines  # the very same lines


def _state_config(tmp_path: Path, state: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"version: 1\nserver: {{host: 127.0.0.1, port: 0}}\nstate: sqlite:///{state}\n")
    return cfg


def test_state_path_under_a_file_is_a_state_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    r = router("run", "--config", str(_state_config(tmp_path, blocker / "state.db")))
    assert r.returncode == 1
    assert "cannot start on" not in r.stderr  # it was reported as a listen error
    assert f"state sqlite:///{blocker}/state.db: cannot create directory {blocker} (" in r.stderr
    assert "point state: at another path" in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_state_directory_is_a_state_store_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = router("run", "--config", str(_state_config(tmp_path, locked / "state.db")))
    finally:
        locked.chmod(0o700)
    assert r.returncode == 1
    assert "cannot start on" not in r.stderr
    assert f"cannot create {locked}/state.db.lock (Permission denied)" in r.stderr
