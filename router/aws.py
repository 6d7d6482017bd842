"""aiobotocore clients from ``AwsConfig`` (one shared session), and AWS errors described for users.

Credentials come from the standard chain (environment, shared files, container/instance roles); the
router never handles or logs them. ``describe_error`` turns botocore/aiohttp failures into the house
error format and the closed ``ErrorType`` set, so every AWS-backed source reports faults the same way.
"""

from __future__ import annotations

import re
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.parsers import AioResponseParserFactory
from aiobotocore.session import AioSession, ClientCreatorContext, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.utils import parse_timestamp as default_timestamp_parser

from router.config.models import AwsConfig
from router.invocation import ErrorType

_session: AioSession | None = None

NOT_FOUND_CODES = frozenset({
    "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "ResourceNotFoundException",
})
AUTH_CODES = frozenset({
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "AccessDenied",
    "AccessDeniedException", "InvalidSecurity", "ExpiredToken", "ExpiredTokenException",
    "IncompleteSignature", "MissingAuthenticationToken", "AuthFailure",
})
THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestThrottled", "RequestThrottledException",
    "ProvisionedThroughputExceededException", "TooManyRequestsException", "LimitExceededException",
    "OverLimit", "SlowDown", "RequestLimitExceeded", "KMSThrottlingException",
})


def session() -> AioSession:
    """The process-wide aiobotocore session: service models and credentials are loaded once."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


def create_client(
    service: str,
    aws: AwsConfig,
    *,
    max_pool_connections: int = 10,
    read_timeout: float = 60.0,
    connect_timeout: float = 10.0,
    max_attempts: int = 3,
    validate_params: bool = True,
) -> ClientCreatorContext:
    """An aiobotocore client context for ``service`` (``async with create_client("sqs", aws) as c``).

    ``read_timeout`` must exceed any long poll the caller makes; ``max_attempts`` bounds botocore's own
    retries (standard mode) so that callers see persistent faults quickly and apply their own backoff.
    ``validate_params=False`` skips botocore's client-side check of every call's parameters against the
    service model (~20-80 us a call), for hot paths whose parameters the router builds itself; AWS still
    rejects a bad call (a ``ClientError`` instead of a ``ParamValidationError``).
    """
    config = AioConfig(
        max_pool_connections=max_pool_connections,
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        parameter_validation=validate_params,
    )
    return session().create_client(
        service, region_name=aws.region, endpoint_url=aws.endpoint_url, config=config
    )


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError`` (``QueueDoesNotExist``), else None."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def describe_error(exc: BaseException, *, what: str, hint_not_found: str) -> tuple[str, ErrorType]:
    """What went wrong talking to AWS, for a log line after ``"<where>: "``, and its error type.

    ``what`` names the resource (``queue``, ``stream``); ``hint_not_found`` says where to look when it
    does not exist (``check source.queue_url and aws.region``). Messages never carry credentials.
    """
    code = error_code(exc)
    if code is not None:
        assert isinstance(exc, ClientError)
        message = str(exc.response.get("Error", {}).get("Message") or "").strip()
        if message.startswith("<"):  # an error body botocore could not parse: keep its code and message
            inner = re.search(r"<Code>([^<]{1,100})</Code>", message)
            text = re.search(r"<Message>([^<]{0,500})</Message>", message)
            if inner:
                code = inner.group(1)
            message = text.group(1) if text else ""
        detail = f": {message}" if message else ""
        if code in NOT_FOUND_CODES:
            return f"{what} not found ({code}); {hint_not_found}", ErrorType.CONFIG
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in AUTH_CODES or code == "403" or status == 403:
            # "403": the code botocore gives when it cannot parse the error body (an endpoint answering
            # a JSON-protocol call in XML, as moto_server does for authentication errors).
            return (f"access denied ({code}){detail}; check the AWS credentials (AWS_ACCESS_KEY_ID, "
                    "AWS_PROFILE or the instance role) and their permissions", ErrorType.CONFIG)
        if code in THROTTLE_CODES:
            return f"throttled by AWS ({code}); backing off", ErrorType.THROTTLED
        kind = ErrorType.HTTP_5XX if isinstance(status, int) and status >= 500 else ErrorType.HTTP_4XX
        return f"AWS error {code}{detail}", kind
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (f"no usable AWS credentials ({type(exc).__name__}); set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role", ErrorType.CONFIG)
    if isinstance(exc, BotoConnectionError | HTTPClientError | OSError | TimeoutError):
        return (f"cannot reach AWS ({type(exc).__name__}: {exc}); check aws.endpoint_url, aws.region "
                "and the network", ErrorType.CONNECTION)
    if isinstance(exc, BotoCoreError):
        return f"AWS client error ({type(exc).__name__}: {exc})", ErrorType.CONNECTION
    return f"unexpected error ({type(exc).__name__}: {exc})", ErrorType.CONNECTION


def region_of(arn: str, default: str) -> str:
    """The region named in an ARN (``arn:PARTITION:SERVICE:REGION:ACCOUNT:...``), else ``default``."""
    parts = arn.split(":", 5)
    return parts[3] if len(parts) >= 5 and parts[0] == "arn" and parts[3] else default


def _epoch_or_parsed(value: Any) -> Any:
    """botocore's timestamp parser, except that epoch numbers (what the JSON protocols return) stay
    numbers: the stream adapters want epoch seconds, and botocore's conversion to a ``datetime`` in the
    local zone costs more than the rest of a record's decoding."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default_timestamp_parser(value)


def keep_epoch_timestamps(client: Any) -> None:
    """Make ``client`` (aiobotocore) leave epoch timestamps as numbers (``_epoch_or_parsed``). Only this
    client's endpoint gets its own parser factory; a client without one (another botocore) keeps
    botocore's parser, which the adapters accept as well."""
    endpoint = getattr(client, "_endpoint", None)
    if endpoint is None or not hasattr(endpoint, "_response_parser_factory"):
        return
    factory = AioResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=_epoch_or_parsed)
    endpoint._response_parser_factory = factory
