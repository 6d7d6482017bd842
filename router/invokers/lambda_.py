"""``lambda`` invoker: call a real AWS Lambda function (or any Lambda Invoke API) with aiobotocore.

Every attempt is a ``RequestResponse`` invoke, also for async routes: the router persists async events
in its own queue and its worker calls the invoker, so retries, maximum event age and destinations are
the router's (configured under ``functions.<name>.async``) and behave the same for every function
kind. Handing the event to Lambda with ``InvocationType=Event`` would instead apply the remote
function's own async settings, and the router could report neither the result nor the failure.

Result mapping:

- ``FunctionError`` in the response: ``Outcome.ERROR``, ``function_error`` as Lambda sent it
  (``Unhandled``), ``error_type`` handler, the payload is Lambda's error object; a remote timeout
  (``Sandbox.Timedout`` / ``Task timed out after``) is ``Outcome.TIMEOUT``.
- ``TooManyRequestsException`` and other throttles: ``Outcome.THROTTLED`` with ``throttle=True``.
- ``ResourceNotFoundException``: an error that is not retried (a config problem).
- Lambda service errors (5xx) and connection errors: infrastructure, ``throttle=True`` (retried until
  the event's maximum age without using up a retry).
- No answer within the function's ``timeout`` plus ``READ_MARGIN``: ``Outcome.TIMEOUT``.
- ``LogResult`` (with ``X-Amz-Log-Type: Tail``) becomes ``Result.logs``; ``ExecutedVersion`` becomes
  ``Result.executed_version``.

botocore's own retries are off: the dispatcher and the async worker decide about retrying.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from router.aws import AUTH_CODES, THROTTLE_CODES, create_client, error_code
from router.config.models import AwsConfig, FunctionConfig
from router.invocation import ErrorType, Invocation, Outcome, Result
from router.urls import safe_url

READ_MARGIN = 10.0
"""Seconds added to the function's timeout before an unanswered invoke counts as timed out."""
CONNECT_TIMEOUT = 10.0
_RETRYABLE_CODES = frozenset({"ResourceConflictException", "ResourceNotReadyException"})


class LambdaInvoker:
    """Invoker of a function whose target is ``lambda: {function_name, qualifier, region, endpoint_url}``.

    ``region`` and ``endpoint_url`` default to the top-level ``aws`` settings. Credentials come from the
    standard AWS chain and are never logged. ``start`` opens the client, ``close`` closes it.
    """

    def __init__(
        self, name: str, fn_config: FunctionConfig, *, aws: AwsConfig, read_margin: float = READ_MARGIN
    ) -> None:
        target = fn_config.lambda_
        if target is None:
            raise ValueError(f"LambdaInvoker: function '{name}' has no lambda target")
        self.name = name
        self.function_name = target.function_name
        self.qualifier = target.qualifier
        self.aws = aws.model_copy(update={
            "region": target.region or aws.region,
            "endpoint_url": target.endpoint_url or aws.endpoint_url,
        })
        self._timeout = fn_config.timeout
        self._read_margin = read_margin
        self._pool = max(10, fn_config.concurrency or 100)
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        shown = self.function_name + (f":{self.qualifier}" if self.qualifier else "")
        where = f"function '{name}': lambda '{shown}' in {self.aws.region}"
        if self.aws.endpoint_url:
            where += f" at {safe_url(self.aws.endpoint_url)}"
        self._where = where

    async def start(self) -> None:
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(create_client(
            "lambda", self.aws, max_pool_connections=self._pool,
            read_timeout=self._timeout + self._read_margin, connect_timeout=CONNECT_TIMEOUT, max_attempts=0,
        ))
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def invoke(self, invocation: Invocation) -> Result:
        if self._client is None:
            raise RuntimeError(f"{self._where}: invoke() before start()")
        kwargs: dict[str, Any] = {
            "FunctionName": self.function_name,
            "InvocationType": "RequestResponse",
            "Payload": invocation.payload,
        }
        if self.qualifier:
            kwargs["Qualifier"] = self.qualifier
        if invocation.log_tail:
            kwargs["LogType"] = "Tail"
        if invocation.client_context:
            kwargs["ClientContext"] = invocation.client_context
        started = time.monotonic()
        try:
            response = await self._client.invoke(**kwargs)
            payload = await response["Payload"].read()
            result = self._map_response(response, payload)
        except ReadTimeoutError:
            result = Result.error(
                "Sandbox.Timedout",
                f"{self._where}: no answer within {self._timeout + self._read_margin:.2f} seconds "
                f"(timeout {self._timeout:.2f}s + {self._read_margin:g}s margin)",
                outcome=Outcome.TIMEOUT, error_type=ErrorType.TIMEOUT,
            )
        except ClientError as exc:
            result = self._map_client_error(exc)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            result = Result.error(
                type(exc).__name__,
                f"{self._where}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run with an instance role",
                error_type=ErrorType.CONFIG, throttle=True,
            )
        except (BotoCoreError, OSError) as exc:
            result = Result.error(
                "LambdaConnectionError",
                f"{self._where}: cannot reach the Lambda API ({_describe(exc)}); check "
                f"functions.{self.name}.lambda.endpoint_url, the region and the network",
                error_type=ErrorType.CONNECTION, throttle=True,
            )
        result.duration = time.monotonic() - started
        return result

    def _map_response(self, response: dict[str, Any], payload: bytes) -> Result:
        logs = _decode_log(response.get("LogResult"))
        version = str(response.get("ExecutedVersion") or "$LATEST")
        status = int(response.get("StatusCode") or 200)
        function_error = response.get("FunctionError")
        if not function_error:
            return Result(payload=payload or b"null", status_code=status, executed_version=version,
                          log_text=logs)
        outcome, error_type = Outcome.ERROR, ErrorType.HANDLER
        if _is_timeout(payload):
            outcome, error_type = Outcome.TIMEOUT, ErrorType.TIMEOUT
        return Result(
            payload=payload, outcome=outcome, function_error=str(function_error), error_type=error_type,
            status_code=status, executed_version=version, log_text=logs,
        )

    def _map_client_error(self, exc: ClientError) -> Result:
        code = error_code(exc) or "ServiceException"
        detail = str(exc.response.get("Error", {}).get("Message") or exc.response.get("message") or "")
        detail = detail.strip()
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = status if isinstance(status, int) else 0
        if code == "ResourceNotFoundException":
            return Result.error(
                code,
                f"{self._where}: function not found ({detail or code}); check "
                f"functions.{self.name}.lambda.function_name, qualifier and region",
                error_type=ErrorType.CONFIG, retryable=False, status_code=status or 404,
            )
        if code in THROTTLE_CODES or status == 429:
            return Result.error(
                code, f"{self._where}: throttled ({code}){_colon(detail)}",
                outcome=Outcome.THROTTLED, error_type=ErrorType.THROTTLED, throttle=True,
                status_code=status or 429,
            )
        if code in AUTH_CODES:
            return Result.error(
                code, f"{self._where}: access denied ({code}){_colon(detail)}; check the AWS credentials "
                "and their lambda:InvokeFunction permission",
                error_type=ErrorType.CONFIG, retryable=False, status_code=status,
            )
        message = f"{self._where}: {code}{_colon(detail)}"
        if status >= 500:
            # Lambda service errors (ServiceException, ENI/KMS/EC2 problems): infrastructure.
            return Result.error(code, message, error_type=ErrorType.HTTP_5XX, throttle=True,
                                status_code=status)
        return Result.error(code, message, error_type=ErrorType.HTTP_4XX,
                            retryable=code in _RETRYABLE_CODES, status_code=status)


def _describe(exc: BaseException) -> str:
    """The exception's class, and an OS error's reason: never its text, which may repeat the URL."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


def _colon(detail: str) -> str:
    return f": {detail[:300]}" if detail else ""


def _decode_log(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    try:
        return base64.b64decode(value).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return ""


def _is_timeout(payload: bytes) -> bool:
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    message = body.get("errorMessage")
    return body.get("errorType") == "Sandbox.Timedout" or (
        isinstance(message, str) and "Task timed out after" in message
    )
