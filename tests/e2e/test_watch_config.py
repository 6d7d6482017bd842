"""``server.watch_config`` on a real ``router run``: a changed config file is reloaded as SIGHUP does (written
in place, renamed over, or swapped through symlinks as a Kubernetes ConfigMap is), a broken one is refused
with its FILE:LINE:COL and the running config kept until the file is fixed; without the setting a changed
file waits for SIGHUP; shutdown with the watch running is clean."""

from __future__ import annotations

import functools
import os
import signal
import textwrap
from pathlib import Path

from tests.router_process import RouterFactory, RouterProcess, http, metric_sample
from tests.waiting import until_sync

VERSIONED = """
    import os

    def handler(event, context):
        return {"statusCode": 200, "body": os.environ["VERSION"]}
"""
DEADLINE = 30.0  # a look each second, a reload once the change held still for one more


def _config(tmp_path: Path, router_factory: RouterFactory, *, version: str, watch: bool = True,
            key: str = "handler") -> str:
    code = router_factory.write_function("versioned", VERSIONED)
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s, watch_config: {str(watch).lower()}}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          versioned: {{runtime: python3.11, {key}: app.handler, code: {code}, timeout: 10s,
                       environment: {{VERSION: "{version}"}}}}
        routes:
          - {{name: versioned, source: {{type: webhook, path: /versioned}}, function: versioned}}
    """


def _text(rp: RouterProcess, text: str) -> str:
    return textwrap.dedent(text).replace("@PORT@", str(rp.port))


def _generation(rp: RouterProcess) -> float | None:
    return metric_sample(rp.url, "router_config_generation")


def _at_generation(rp: RouterProcess, generation: int) -> bool:
    return _generation(rp) == generation


def _reloads(rp: RouterProcess, result: str) -> float | None:
    return metric_sample(rp.url, f'router_config_reloads_total{{result="{result}"}}')


def _answer(rp: RouterProcess) -> str:
    status, _, body = http("POST", rp.url + "/versioned", b"{}", timeout=10)
    assert status == 200, body
    return body.decode()


def _messages(rp: RouterProcess) -> list[str]:
    return [str(r.get("message", "")) for r in rp.log_records()]


def test_a_file_changed_in_place_is_reloaded_without_a_signal(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    assert _answer(rp) == "1"
    rp.config_path.write_text(_text(rp, _config(tmp_path, router_factory, version="2")))
    until_sync(lambda: _generation(rp) == 2, deadline=DEADLINE, what="generation 2 from the file watch")
    assert _answer(rp) == "2"
    assert _reloads(rp, "applied") == 1
    assert _reloads(rp, "refused") is None
    messages = _messages(rp)
    assert f"watching {rp.config_path} for changes (server.watch_config)" in messages
    assert f"{rp.config_path}: the config file changed: reloading (server.watch_config)" in messages
    assert "reload applied, config generation 2: functions changed: versioned" in messages
    assert rp.stop() == 0


def test_a_broken_file_is_refused_with_its_line_and_the_fixed_file_applied(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    rp.config_path.write_text(_text(rp, _config(tmp_path, router_factory, version="2", key="handlr")))
    until_sync(lambda: _reloads(rp, "refused") == 1, deadline=DEADLINE, what="the broken file refused")
    assert _generation(rp) == 1
    assert _answer(rp) == "1"  # the running config still serves
    problem = (f"reload refused: {rp.config_path}:6:36: functions.versioned.handlr: unknown key 'handlr'; "
               "did you mean 'handler'?")
    assert problem in _messages(rp)
    rp.config_path.write_text(_text(rp, _config(tmp_path, router_factory, version="3")))
    until_sync(lambda: _generation(rp) == 2, deadline=DEADLINE, what="the fixed file applied")
    assert _answer(rp) == "3"
    # The broken file was looked at every second but reloaded once: only a change is reloaded.
    assert (_reloads(rp, "refused"), _reloads(rp, "applied")) == (1, 1)
    assert rp.stop() == 0


def test_a_file_renamed_over_the_config_is_reloaded(router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    before = rp.config_path.stat()
    temporary = tmp_path / ".config.yaml.swp"
    temporary.write_text(_text(rp, _config(tmp_path, router_factory, version="2")))
    os.replace(temporary, rp.config_path)  # an editor's save: write a temporary file, rename it over
    assert rp.config_path.stat().st_ino != before.st_ino
    until_sync(lambda: _generation(rp) == 2, deadline=DEADLINE, what="generation 2 after the rename")
    assert _answer(rp) == "2"
    assert rp.stop() == 0


def test_a_configmap_style_symlink_swap_is_reloaded(router_factory: RouterFactory, tmp_path: Path) -> None:
    # What the kubelet mounts: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/; an update
    # writes a new directory and renames a new ..data link over the old one.
    rp = router_factory(_config(tmp_path, router_factory, version="1"), start=False)
    first = tmp_path / "..2024_01_01"
    first.mkdir()
    rp.config_path.rename(first / "config.yaml")
    (tmp_path / "..data").symlink_to(first.name)
    rp.config_path.symlink_to(Path("..data") / "config.yaml")
    rp.start()
    assert _answer(rp) == "1"
    second = tmp_path / "..2024_01_02"
    second.mkdir()
    (second / "config.yaml").write_text(_text(rp, _config(tmp_path, router_factory, version="2")))
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    (first / "config.yaml").unlink()  # the kubelet removes the old directory
    first.rmdir()
    until_sync(lambda: _generation(rp) == 2, deadline=DEADLINE, what="generation 2 after the ConfigMap swap")
    assert _answer(rp) == "2"
    assert _reloads(rp, "refused") is None  # the config's directory is the link's, which did not move
    assert rp.stop() == 0


def test_without_watch_config_a_changed_file_waits_for_sighup(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    plain_dir, watched_dir = tmp_path / "plain", tmp_path / "watched"
    plain_dir.mkdir()
    watched_dir.mkdir()
    plain = router_factory(_config(plain_dir, router_factory, version="1", watch=False),
                           name="plain/config.yaml")
    # A watched router beside it is the clock: once it has applied two changes, the plain one has been
    # running for at least as many looks of a watch, had it one.
    watched = router_factory(_config(watched_dir, router_factory, version="1"), name="watched/config.yaml")
    plain.config_path.write_text(_text(plain, _config(plain_dir, router_factory, version="2", watch=False)))
    for generation, version in ((2, "2"), (3, "3")):
        watched.config_path.write_text(_text(watched, _config(watched_dir, router_factory, version=version)))
        until_sync(functools.partial(_at_generation, watched, generation), deadline=DEADLINE,
                   what=f"the watched router at generation {generation}")
    assert _generation(plain) == 1
    assert _answer(plain) == "1"
    assert plain.proc is not None
    plain.proc.send_signal(signal.SIGHUP)
    until_sync(lambda: _generation(plain) == 2, deadline=DEADLINE, what="generation 2 after SIGHUP")
    assert _answer(plain) == "2"
    # One reload, SIGHUP's: none before it (it would have applied the change, SIGHUP's found it unchanged).
    assert (_reloads(plain, "applied"), _reloads(plain, "unchanged")) == (1, None)
    assert not any("server.watch_config" in m for m in _messages(plain))
    assert plain.stop() == 0
    assert watched.stop() == 0


def test_shutdown_with_the_watch_running_is_clean(router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    rp.config_path.write_text(_text(rp, _config(tmp_path, router_factory, version="2")))
    until_sync(lambda: _generation(rp) == 2, deadline=DEADLINE, what="the watch running: generation 2")
    rp.config_path.write_text(_text(rp, _config(tmp_path, router_factory, version="3")))  # pending at stop
    assert rp.stop(signal.SIGTERM) == 0
    records = rp.log_records()
    assert [r for r in records if r.get("level") in ("error", "critical")] == []
    assert not any("Traceback" in str(r) or "Task was destroyed" in str(r) for r in records)
    assert records[-1].get("message") == "router stopped"
