"""Search-path order for layers and installed dependencies (``router.runtime.layers``)."""

from __future__ import annotations

from pathlib import Path

from router.runtime.layers import Layer, search_paths

CODE = Path("/app/code")
A, B = Path("/layers/a"), Path("/layers/b")


def test_python_code_first_then_its_deps_then_later_layers_first() -> None:
    paths = search_paths(python_version="3.12", node_major=None, code_dir=CODE,
                         code_installed=[Path("/cache/code/python")],
                         layers=[Layer(A, (Path("/cache/a/python"),)), Layer(B)], exists=lambda p: True)
    assert paths.python == [
        "/app/code", "/cache/code/python",
        "/layers/b/python/lib/python3.12/site-packages", "/layers/b/python",
        "/layers/a/python/lib/python3.12/site-packages", "/layers/a/python", "/cache/a/python",
    ]
    assert paths.node == []
    assert paths.bin == ["/layers/b/bin", "/layers/a/bin"]
    assert paths.lib == ["/layers/b/lib", "/layers/a/lib"]


def test_node_versioned_directory_before_the_plain_one_and_the_code_dir_last() -> None:
    paths = search_paths(python_version=None, node_major=20, code_dir=CODE,
                         code_installed=[Path("/cache/code/node_modules")], layers=[Layer(A), Layer(B)],
                         exists=lambda p: True)
    assert paths.node == [
        "/cache/code/node_modules",
        "/layers/b/nodejs/node20/node_modules", "/layers/b/nodejs/node_modules",
        "/layers/a/nodejs/node20/node_modules", "/layers/a/nodejs/node_modules",
        "/app/code",
    ]
    assert paths.python == []


def test_only_directories_that_exist_are_listed() -> None:
    present = {A / "python", B / "bin"}
    paths = search_paths(python_version="3.11", node_major=None, code_dir=CODE, code_installed=[],
                         layers=[Layer(A), Layer(B)], exists=lambda p: p in present)
    assert paths.python == ["/app/code", "/layers/a/python"]
    assert paths.bin == ["/layers/b/bin"]
    assert paths.lib == []


def test_provided_gets_bin_and_lib_only() -> None:
    paths = search_paths(python_version=None, node_major=None, code_dir=CODE, code_installed=[],
                         layers=[Layer(A)], exists=lambda p: True)
    assert (paths.python, paths.node, paths.bin, paths.lib) == ([], [], ["/layers/a/bin"], ["/layers/a/lib"])
