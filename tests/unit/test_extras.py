"""The ``router[boto3]`` extra pins a boto3 that fits the botocore aiobotocore pins, so pip resolves it at
once instead of backtracking through boto3's releases (README: boto3 beside the router)."""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.router_process import ROOT


def _extra(name: str) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["optional-dependencies"][name]]
    return {r.name: r for r in reqs}


def _requirement(dist: str, of: str) -> SpecifierSet:
    """``dist``'s installed requirement on ``of`` (its specifier)."""
    for raw in metadata.requires(dist) or []:
        req = Requirement(raw)
        if req.name == of and (req.marker is None or req.marker.evaluate({"extra": ""})):
            return req.specifier
    raise AssertionError(f"{dist} does not require {of}")


def test_the_boto3_extra_is_the_botocore_range_of_its_aiobotocore() -> None:
    extra = _extra("boto3")
    aiobotocore = Version(metadata.version("aiobotocore"))
    # The tests run on the aiobotocore the extra names (the test extra includes router[boto3]).
    assert aiobotocore in extra["aiobotocore"].specifier, (aiobotocore, extra["aiobotocore"])
    botocore_range = _requirement("aiobotocore", "botocore")
    # boto3 N.N.N requires botocore >= N.N.N (within its minor line): the boto3 versions that fit are those
    # in aiobotocore's botocore range; the extra must say exactly that range.
    boto3_range = extra["boto3"].specifier
    assert boto3_range == botocore_range, (
        f"pyproject.toml's boto3 extra says boto3{boto3_range}, but aiobotocore {aiobotocore} pins "
        f"botocore{botocore_range}; set boto3 to {botocore_range}")


def test_the_installed_boto3_fits_the_installed_botocore() -> None:
    boto3, botocore = Version(metadata.version("boto3")), Version(metadata.version("botocore"))
    assert boto3 in _extra("boto3")["boto3"].specifier
    assert botocore in _requirement("boto3", "botocore"), (boto3, botocore)
    assert botocore in _requirement("aiobotocore", "botocore")
    assert _requirement("boto3", "botocore").contains(str(boto3))  # boto3 N.N.N works with botocore N.N.N
