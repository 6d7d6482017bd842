"""The value checks shared by validate and run: what they accept (the forms AWS, moto and API Gateway
use) and what they refuse."""

from __future__ import annotations

import pytest

from router.config.checks import arn_problem, lambda_name_problem, url_problem, webhook_path_problem


@pytest.mark.parametrize("path", ["/a", "/users/{id}", "/files/{proxy+}", "/a/{x}/b/{y}", "/", "/v1/x.json"])
def test_webhook_paths_accepted(path: str) -> None:
    assert webhook_path_problem(path) is None


@pytest.mark.parametrize("path", ["/hooks/{id", "/hooks/id}", "/a/{}", "/a/{1x}"])
def test_webhook_paths_refused(path: str) -> None:
    assert webhook_path_problem(path) is not None


@pytest.mark.parametrize("url", ["http://127.0.0.1:4566/000000000000/q", "https://sqs.eu-west-1.amazonaws.com/1/q",
                                 "http://[::1]:8080/x", "HTTPS://h/"])
def test_urls_accepted(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "why"), [
    ("http//h/x", "got no scheme"), ("ftp://h/x", "got ftp://..."), ("http:///x", "with a host"),
    ("http://h:99999/", "cannot be parsed"), ("http://h/a b", "white space"),
])
def test_urls_refused_without_quoting_them(url: str, why: str) -> None:
    problem = url_problem(url)
    assert problem is not None
    assert why in problem
    assert "/x" not in problem


@pytest.mark.parametrize(("arn", "service"), [
    ("arn:aws:kinesis:us-east-1:123456789012:stream/clicks", "kinesis"),
    ("arn:aws-us-gov:kinesis:us-gov-west-1:123456789012:stream/a.b_c-d", "kinesis"),
    ("arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000", "dynamodb"),
])
def test_stream_arns_accepted(arn: str, service: str) -> None:
    assert arn_problem(arn, service, "stream") is None


@pytest.mark.parametrize(("arn", "service"), [
    ("s", "kinesis"), ("arn:aws:kinesis:us-east-1:stream/clicks", "kinesis"),
    ("arn:aws:kinesis:us-east-1:123456789012:table/t", "kinesis"),
    ("arn:aws:dynamodb:us-east-1:123456789012:table/t", "dynamodb"),
    ("arn:aws:kinesis:us-east-1:123456789012:stream/clicks", "dynamodb"),
])
def test_stream_arns_refused(arn: str, service: str) -> None:
    assert arn_problem(arn, service, "stream") is not None


@pytest.mark.parametrize("name", ["thumbs", "thumbs:prod", "123456789012:function:thumbs",
                                  "arn:aws:lambda:eu-west-1:123456789012:function:thumbs:$LATEST"])
def test_lambda_names_accepted(name: str) -> None:
    assert lambda_name_problem(name) is None


@pytest.mark.parametrize("name", ["a b", "arn:aws:lambda:eu-west-1:12:function:x", "x" * 65])
def test_lambda_names_refused(name: str) -> None:
    assert lambda_name_problem(name) is not None
