"""``server.watch_config``'s look at the config file (router/config/watch.py): a change is reloaded once it
has held still for one more look, a file replaced by a rename or a symlink swap counts as changed, a file
that is gone is warned about once and reloaded when it is back. Driven look by look: no real waiting."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from router.clock import SystemClock
from router.config.diff import diff
from router.config.loader import load_config
from router.config.watch import (
    WATCH_INTERVAL,
    FileWatch,
    Stamp,
    file_stamp,
    initial_stamp,
    unreadable,
    watch,
)

A: Stamp = (1_000, 10, 1, 1)
B: Stamp = (2_000, 20, 1, 1)
C: Stamp = (3_000, 30, 1, 1)
GONE = FileNotFoundError(2, "No such file or directory")


def _steps(watch: FileWatch, *seen: Stamp | OSError) -> list[str]:
    return [watch.poll(s) for s in seen]


def test_an_unchanged_file_is_not_reloaded() -> None:
    assert _steps(FileWatch(A), A, A, A) == ["wait", "wait", "wait"]


def test_a_change_is_reloaded_once_it_has_held_still_for_one_more_look() -> None:
    file = FileWatch(A)
    assert _steps(file, B, B, B, B) == ["wait", "reload", "wait", "wait"]
    assert file.current == B


def test_a_file_still_being_written_is_reloaded_only_once_it_stops_changing() -> None:
    assert _steps(FileWatch(A), B, C, C, C) == ["wait", "wait", "reload", "wait"]


def test_a_change_undone_before_the_next_look_is_not_reloaded() -> None:
    assert _steps(FileWatch(A), B, A, A) == ["wait", "wait", "wait"]


def test_a_changed_inode_or_device_alone_is_a_change() -> None:
    moved = (A[0], A[1], A[2] + 1, A[3])  # renamed over with the same mtime and size
    assert _steps(FileWatch(A), moved, moved) == ["wait", "reload"]
    other_device = (A[0], A[1], A[2], A[3] + 1)
    assert _steps(FileWatch(A), other_device, other_device) == ["wait", "reload"]


def test_a_file_gone_is_reported_once_and_reloaded_when_it_is_back_even_unchanged() -> None:
    file = FileWatch(A)
    assert _steps(file, GONE, GONE, PermissionError(13, "Permission denied")) == ["gone", "wait", "wait"]
    assert _steps(file, A, A, A) == ["wait", "reload", "wait"]  # back: what runs may not be it
    assert _steps(file, GONE) == ["gone"]  # gone again: reported again


def test_a_change_half_seen_before_the_file_went_is_forgotten() -> None:
    file = FileWatch(A)
    assert _steps(file, B, GONE, B, B) == ["wait", "gone", "wait", "reload"]


def test_an_unreadable_file_at_start_is_reloaded_once_readable() -> None:
    assert _steps(FileWatch(None), A, A) == ["wait", "reload"]


def test_the_stamp_follows_symlinks_and_sees_a_rename_over_the_file(tmp_path: Path) -> None:
    data = tmp_path / "v1"
    data.mkdir()
    (data / "router.yaml").write_text("version: 1\n")
    link = tmp_path / "router.yaml"
    link.symlink_to(data / "router.yaml")
    assert file_stamp(str(link)) == file_stamp(str(data / "router.yaml"))
    before = file_stamp(str(link))
    # A ConfigMap's update: a new directory, and the link swapped to it atomically.
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "router.yaml").write_text("version: 1\n")
    os.utime(tmp_path / "v2" / "router.yaml", ns=(before[0], before[0]))
    (tmp_path / "next").symlink_to(tmp_path / "v2" / "router.yaml")
    os.replace(tmp_path / "next", link)
    swapped = file_stamp(str(link))
    assert swapped[:2] == before[:2]  # the same mtime and size: only the inode tells
    assert swapped != before
    # An editor's save: write a temporary file, rename it over the original.
    plain = tmp_path / "plain.yaml"
    plain.write_text("a\n")
    first = file_stamp(str(plain))
    (tmp_path / "plain.yaml.tmp").write_text("b\n")
    os.utime(tmp_path / "plain.yaml.tmp", ns=(first[0], first[0]))
    os.replace(tmp_path / "plain.yaml.tmp", plain)
    assert file_stamp(str(plain)) != first
    assert initial_stamp(str(tmp_path / "missing.yaml")) is None
    with pytest.raises(FileNotFoundError):
        file_stamp(str(tmp_path / "missing.yaml"))


def test_a_configmap_swap_does_not_move_the_configs_directory(tmp_path: Path) -> None:
    # The kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/, swapped on update.
    (tmp_path / "fn").mkdir()
    text = "functions:\n  f: {runtime: python3.11, handler: app.handler, code: ./fn, timeout: %s}\n"
    for stamp, timeout in (("..1", "3s"), ("..2", "4s")):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "config.yaml").write_text(text % timeout)
    (tmp_path / "..data").symlink_to("..1")
    (tmp_path / "config.yaml").symlink_to(Path("..data") / "config.yaml")
    old = load_config(tmp_path / "config.yaml", {})
    (tmp_path / "next").symlink_to("..2")
    os.replace(tmp_path / "next", tmp_path / "..data")
    new = load_config(tmp_path / "config.yaml", {})
    assert old.config_dir == new.config_dir == tmp_path.resolve()  # the link's directory: ./fn is found
    change = diff(old, new)
    assert change.applicable, change.refusal()
    assert change.functions_changed == ("f",)


def test_a_file_that_cannot_be_looked_at_is_named_with_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError) as caught:
        file_stamp(str(tmp_path / "file" / "router.yaml"))
    assert unreadable("etc/router.yaml", caught.value) == (
        "etc/router.yaml: the config file cannot be read (Not a directory); the running config is kept, and "
        "the file is reloaded when it is back (server.watch_config)")
    assert unreadable("router.yaml", GONE).startswith(
        "router.yaml: the config file is gone (deleted or renamed away); ")


class LookClock(SystemClock):
    """The watch's sleeps end only when the test says: ``look()`` lets one look (and its reload) run."""

    def __init__(self) -> None:
        self.asleep = asyncio.Event()
        self.wake = asyncio.Event()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.asleep.set()
        await self.wake.wait()
        self.wake.clear()

    async def look(self) -> None:
        await asyncio.wait_for(self.asleep.wait(), 10)
        self.asleep.clear()
        self.wake.set()
        await asyncio.wait_for(self.asleep.wait(), 10)  # sleeping again: the look and its reload are done


async def test_the_watch_reloads_a_file_changed_renamed_gone_and_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("version: 1\n")
    reloads: list[str] = []

    async def reload() -> None:
        reloads.append(path.read_text() if path.exists() else "")

    clock = LookClock()
    task = asyncio.create_task(watch(str(path), reload, first=initial_stamp(str(path)), clock=clock))
    try:
        caplog.set_level(logging.INFO, logger="router")
        await clock.look()
        assert reloads == []
        path.write_text("version: 1\nfunctions: {}\n")
        await clock.look()
        assert reloads == []  # seen once: maybe still being written
        await clock.look()
        assert reloads == ["version: 1\nfunctions: {}\n"]
        await clock.look()
        assert len(reloads) == 1
        (tmp_path / "tmp.yaml").write_text("version: 1\nroutes: []\n")
        os.replace(tmp_path / "tmp.yaml", path)
        await clock.look()
        await clock.look()
        assert reloads[1:] == ["version: 1\nroutes: []\n"]
        path.unlink()
        for _ in range(3):
            await clock.look()
        gone = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in gone] == [
            f"{path}: the config file is gone (deleted or renamed away); the running config is kept, and the "
            "file is reloaded when it is back (server.watch_config)"]
        path.write_text("version: 1\n")
        await clock.look()
        await clock.look()
        assert reloads[2:] == ["version: 1\n"]
        assert f"{path}: the config file changed: reloading (server.watch_config)" in caplog.messages
        assert set(clock.slept) == {WATCH_INTERVAL} == {1.0}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
