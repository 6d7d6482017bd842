"""Fixtures of the sqs source tests: ``aws`` (moto_server), ``sqs`` (test-side calls), ``harness``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from router.aws import create_client
from router.config.models import AwsConfig
from tests.unit.sources.sqs.support import Harness, Sqs


@pytest.fixture(name="aws")
def aws_fixture(moto_server: str) -> AwsConfig:
    return AwsConfig(region="eu-west-1", endpoint_url=moto_server, account_id="123456789012")


@pytest.fixture(name="sqs")
async def sqs_fixture(aws: AwsConfig) -> AsyncIterator[Sqs]:
    async with create_client("sqs", aws) as client:
        yield Sqs(client, aws)


@pytest.fixture(name="harness")
async def harness_fixture(tmp_path: Path, aws: AwsConfig) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as session:
        h = Harness(tmp_path, aws, session)
        try:
            yield h
        finally:
            await h.close()
