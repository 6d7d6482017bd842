"""AWS REST-JSON error responses, shaped as Lambda sends them so botocore raises the right class.

botocore's rest-json parser takes the error code from the ``x-amzn-ErrorType`` header (anything after
a ``:`` is dropped) and the message from the body's ``message`` or ``Message`` key; the modelled
exception members (``Type``, ``Reason``) come from the body too.
"""

from __future__ import annotations

import json

from aiohttp import web


def aws_error(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    extra: dict[str, str] | None = None,
    message_key: str = "message",
) -> web.Response:
    """An error response as Lambda sends it: ``{"Type": "User", "message": ...}`` plus the code header."""
    body: dict[str, str] = {"Type": "User", message_key: message}
    if extra:
        body.update(extra)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id},
    )


def not_found(arn: str, request_id: str) -> web.Response:
    # Lambda's model names this member "Message" (capital M), unlike the other Invoke errors.
    return aws_error(404, "ResourceNotFoundException", f"Function not found: {arn}", request_id,
                     message_key="Message")


def too_many_requests(
    request_id: str, reason: str = "ReservedFunctionConcurrentInvocationLimitExceeded"
) -> web.Response:
    """Lambda's throttle: ``reason`` says which limit (the function's reserved concurrency, or the
    account's ``ConcurrentInvocationLimitExceeded``)."""
    return aws_error(429, "TooManyRequestsException", "Rate Exceeded.", request_id, extra={"Reason": reason})


def too_large(limit: int, request_id: str, *, event_size: int | None = None) -> web.Response:
    """Lambda's answer to a payload over its limit: 413 ``RequestEntityTooLargeException`` (what Lambda
    sends, though botocore's model names only ``RequestTooLargeException``: boto3 raises a ``ClientError``
    with that code). ``event_size``: an Event invocation's payload over the async limit, which Lambda words
    apart."""
    message = (f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
               if event_size is None else
               f"{event_size} byte payload is too large for the Event invocation type (limit {limit} bytes)")
    return aws_error(413, "RequestEntityTooLargeException", message, request_id, message_key="Message")


def bad_content(detail: str, request_id: str) -> web.Response:
    return aws_error(400, "InvalidRequestContentException",
                     f"Could not parse request body into json: {detail}", request_id)


def validation(message: str, request_id: str) -> web.Response:
    return aws_error(400, "ValidationException", message, request_id)


def access_denied(message: str, request_id: str) -> web.Response:
    return aws_error(403, "AccessDeniedException", message, request_id)


def service_error(message: str, request_id: str) -> web.Response:
    return aws_error(500, "ServiceException", message, request_id, message_key="Message")
