"""Checks of single values that ``router run`` would otherwise refuse only once it starts (or never, and
fail at every event): webhook paths, URLs and ARNs. Each returns why the value is unusable, or None.

They run in the config models, so ``router validate`` and ``router run`` refuse the same values with
the same message, at the value's file:line. Messages never quote a URL (it may carry a token).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12}|):"
    r"(?P<resource>.+)$"
)
_KINESIS_STREAM = re.compile(r"^stream/[A-Za-z0-9_.-]{1,128}$")
_DYNAMODB_STREAM = re.compile(r"^table/[A-Za-z0-9_.-]{1,255}/stream/[^/]+$")
_SNS_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_EVENT_BUS = re.compile(r"^event-bus/[A-Za-z0-9/_.-]{1,256}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_LAMBDA_NAME = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z]{2}(?:-[a-z]+)+-\d+:\d{12}:function:|\d{12}:function:)?"
    r"[A-Za-z0-9_-]{1,64}(?::(?:\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)


def aiohttp_path(path: str) -> str:
    """Config path to aiohttp path: ``{name}`` stays, API Gateway's greedy ``{name+}`` is ``{name:.+}``."""
    out: list[str] = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("+}"):
            part = "{" + part[1:-2] + ":.+}"
        out.append(part)
    return "/".join(out)


def webhook_path_problem(path: str) -> str | None:
    """Why aiohttp would refuse ``path`` as a route (after API Gateway's ``{name+}`` is translated)."""
    from aiohttp.web_urldispatcher import DynamicResource, PlainResource

    translated = aiohttp_path(path)
    try:
        if "{" in translated or "}" in translated:
            DynamicResource(translated)
        else:
            PlainResource(translated)
    except (ValueError, re.error):
        return ("invalid path: unbalanced '{' or '}' or a bad parameter; write path parameters as whole "
                "segments, {name} or {name+} (greedy, last)")
    return None


def url_problem(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why ``url`` is not an absolute URL with one of ``schemes`` and a host."""
    wanted = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError:
        return f"must be an {wanted} URL; it cannot be parsed (a bad port or a bracket?)"
    if parts.scheme.lower() not in schemes:
        got = f"{parts.scheme}://..." if parts.scheme else "no scheme"
        return f"must be an {wanted} URL, got {got}"
    if not parts.hostname:
        return f"must be an {wanted} URL with a host, got none"
    if any(c.isspace() for c in url):
        return f"must be an {wanted} URL; it contains white space (percent-encode it as %20)"
    return None


def is_fifo(name: str) -> bool:
    """Whether an SQS queue URL or an SNS topic ARN names a FIFO one (its name ends in ``.fifo``)."""
    return name.rstrip("/").endswith(".fifo")


def arn_problem(arn: str, service: str, kind: str) -> str | None:
    """Why ``arn`` is not the ARN of ``kind`` (``"a Kinesis stream"``, with its article) of ``service``
    (``kinesis``, ``dynamodb`` stream, ``sns`` topic, ``events`` event bus)."""
    if service == "kinesis":
        example, resource = "arn:aws:kinesis:REGION:ACCOUNT:stream/NAME", _KINESIS_STREAM
    elif service == "sns":
        example, resource = "arn:aws:sns:REGION:ACCOUNT:NAME", _SNS_TOPIC
    elif service == "events":
        example, resource = "arn:aws:events:REGION:ACCOUNT:event-bus/NAME", _EVENT_BUS
    else:
        example, resource = "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL", _DYNAMODB_STREAM
    m = _ARN.match(arn)
    if (m is None or m["service"] != service or not _REGION.match(m["region"]) or not m["account"]
            or not resource.match(m["resource"])):
        return f"not {kind} ARN; expected {example} (ACCOUNT: 12 digits)"
    return None


_S3_BUCKET_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:s3:::(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$")


def s3_bucket_of(arn: str) -> str | None:
    """The bucket name of an S3 bucket ARN (``arn:aws:s3:::NAME``: no region, no account), or None."""
    m = _S3_BUCKET_ARN.match(arn)
    return None if m is None or ".." in m["bucket"] else m["bucket"]


def lambda_name_problem(name: str) -> str | None:
    """Why ``name`` is not what Lambda's Invoke takes as FunctionName."""
    if _LAMBDA_NAME.match(name):
        return None
    return ("must be a function name (1-64 of A-Z a-z 0-9 _ -), ACCOUNT:function:NAME or a function ARN "
            "arn:aws:lambda:REGION:ACCOUNT:function:NAME, optionally with :QUALIFIER")
