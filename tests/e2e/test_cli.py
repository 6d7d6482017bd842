"""``router validate | schema | routes | invoke`` and start-up refusals, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.router_process import ROOT, RouterFactory, http, router
from tests.waiting import until_sync


def test_validate_example_config_is_ok() -> None:
    r = router("validate", "config/example.yaml")
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_validate_prints_every_problem_with_file_line_col(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "version: 1\n"
        "functions:\n"
        "  resize:\n"
        "    runtime: python3.11\n"
        "    handler: app.handler\n"
        f"    code: {tmp_path}\n"
        "    timeout: 5 minutes\n"
        "routes:\n"
        "  - name: r\n"
        "    source: {type: schedule, cron: '61 * * * *'}\n"
        "    function: resise\n"
        "    colour: red\n"
    )
    r = router("validate", str(cfg))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith(f"{cfg}:7:") and "functions.resize.timeout" in line for line in lines), lines
    assert any("routes[0].function" in line and "did you mean 'resize'" in line for line in lines), lines
    assert any("routes[0].colour" in line for line in lines), lines
    assert any("routes[0].source.cron" in line for line in lines), lines


def test_run_refuses_bad_config_and_missing_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: 1\nserver:\n  port: ${PORT_NOT_SET}\n")
    r = router("run", "--config", str(cfg))
    assert r.returncode == 1
    assert f"{cfg}:3:" in r.stderr
    assert "PORT_NOT_SET" in r.stderr


def test_schema_command_matches_committed_schema() -> None:
    r = router("schema")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads((ROOT / "config" / "schema.json").read_text())


def test_routes_lists_the_example_routes() -> None:
    r = router("routes", "-c", "config/example.yaml")
    assert r.returncode == 0, r.stderr
    assert "hello" in r.stdout
    assert "GET,POST /hello/{name}" in r.stdout
    assert "cron(0 3 * * *) Europe/Berlin" in r.stdout


def test_invoke_runs_a_function_once_and_prints_result(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pathParameters": {"name": "ada"}}))
    r = router("invoke", "hello", "--event", str(event), "-c", "config/example.yaml")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["message"] == "hello, ada"
    assert "START RequestId" in r.stderr
    assert "REPORT RequestId" in r.stderr
    assert "saying hello to ada" in r.stderr

    r = router("invoke", "helo", "-c", "config/example.yaml")
    assert r.returncode == 2
    assert "did you mean 'hello'" in r.stderr


def test_secrets_never_reach_logs_or_metrics(router_factory: RouterFactory, tmp_path: Path) -> None:
    secret = "s3cr3t-value-from-env-0123456789"
    router_factory.write_function("ok", "def handler(e, c):\n    return 'ok'\n")
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, invoke_token: "${{TOKEN}}"}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          ok: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'ok'}}}
        routes:
          - name: gh
            source: {{type: webhook, path: /gh, auth: {{type: hmac, secret: "${{GH_SECRET}}"}}}}
            function: ok
    """, env={"GH_SECRET": secret, "TOKEN": secret + "-token"})
    import hashlib
    import hmac

    body = b'{"action": "opened"}'
    good = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert http("POST", rp.url + "/gh", body, {"X-Hub-Signature-256": good})[0] == 200
    assert http("POST", rp.url + "/gh", body, {"X-Hub-Signature-256": "sha256=" + "0" * 64})[0] == 401
    assert http("POST", rp.url + "/gh", body)[0] == 401
    status, _, _ = http("POST", rp.url + "/2015-03-31/functions/ok/invocations", b"{}",
                        {"Authorization": "Bearer wrong"})
    assert status in (401, 403)
    _, _, metrics = http("GET", rp.url + "/metrics")
    until_sync(lambda: "router_webhook_requests_total" in metrics.decode(), what="webhook metrics",
               deadline=20)
    assert rp.stop() == 0
    for text in (rp.logs(), metrics.decode()):
        assert secret not in text
        assert good not in text


def test_second_router_on_the_same_sqlite_file_is_refused(router_factory: RouterFactory,
                                                          tmp_path: Path) -> None:
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
    """
    first = router_factory(config)
    second = router_factory(config, start=False, name="second.yaml")
    r = router("run", "--config", str(second.config_path))
    assert r.returncode == 1
    assert f"in use by another router (pid {first.proc.pid})" in r.stderr  # type: ignore[union-attr]
    assert "postgresql://" in r.stderr
    assert http("GET", first.url + "/livez")[0] == 200
    assert first.stop() == 0


def test_port_in_use_is_a_clear_start_up_error(router_factory: RouterFactory, tmp_path: Path) -> None:
    first = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'one.db'}
    """)
    second = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: {first.port}}}
        state: sqlite:///{tmp_path / 'two.db'}
    """, start=False, name="second.yaml")
    r = router("run", "--config", str(second.config_path))
    assert r.returncode == 1
    assert f"cannot start on 127.0.0.1:{first.port}" in r.stderr
    assert "change server.port" in r.stderr
    assert first.stop() == 0
