"""Lambda's InvokeWithResponseStream: ``POST /2021-11-15/functions/{name}/response-streaming-invocations``,
answered as an AWS event stream (``router.http.eventstream``) that boto3's ``invoke_with_response_stream``
reads: ``PayloadChunk`` events as the function writes, then one ``InvokeComplete`` (with ``ErrorCode``
and ``ErrorDetails`` when the function failed, ``LogResult`` with ``LogType: Tail``).

A function that streams (``awslambda.streamifyResponse``, a runtime posting in streaming mode) is
answered as it writes; a buffered function's whole response is one ``PayloadChunk``, as Lambda does.
The answer's ``Content-Type`` is the function's (botocore's ``ResponseStreamContentType``).
Credentials, names and payloads are checked as the Invoke API checks them (``router.http.invoke_api``).
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from router.http import eventstream
from router.http.context import CTX, HttpContext
from router.http.invoke_api import InvokeApiRefusals, _log_result, begin, refused_result
from router.http.refusals import REFUSED
from router.http.streaming import StreamedCall
from router.invocation import Invocation, Result

log = logging.getLogger("router.http.invoke_stream")

PATH = "/2021-11-15/functions/{name}/response-streaming-invocations"
SOURCE = "invoke_api"
EVENT_STREAM = "application/vnd.amazon.eventstream"


async def invoke_with_response_stream(request: web.Request) -> web.StreamResponse:
    ctx: HttpContext = request.app[CTX]
    begun = await begin(request, ("RequestResponse",))
    if isinstance(begun, web.Response):
        return begun
    request_id = begun.request_id
    inv = Invocation(function=begun.name, payload=begun.body, source=SOURCE, request_id=request_id,
                     log_tail=request.headers.get("X-Amz-Log-Type") == "Tail",
                     client_context=begun.client_context, qualifier=begun.qualifier,
                     trace_id=request.headers.get("X-Amzn-Trace-Id") or None)
    async with StreamedCall(ctx.dispatcher, inv) as call:
        try:
            streams = await call.streams()
            result = None if streams else await call.result()
        except REFUSED as exc:
            return InvokeApiRefusals(begun.arn).answer(exc, inv)
        refused = None if result is None else refused_result(result, request_id)
        if refused is not None:
            return refused
        content_type = call.stream.content_type if streams else "application/json"
        response = web.StreamResponse(status=200, headers={
            "x-amzn-RequestId": request_id, "Content-Type": content_type,
            "X-Amz-Executed-Version": (result.executed_version if result is not None
                                       else inv.version or "$LATEST"),
        })
        try:
            await response.prepare(request)
            if streams:
                async for chunk in call.stream:
                    await response.write(eventstream.payload_chunk(chunk))
                result = await call.result()
            elif result is not None and not result.function_error and result.ok:
                await response.write(eventstream.payload_chunk(result.payload))
            assert result is not None
            await response.write(complete(result, inv))
            await response.write_eof()
        except ConnectionError:  # the caller went away: the function finishes, its response is dropped
            log.info("InvokeWithResponseStream: the caller went away while the response streamed",
                     extra={"function": inv.function, "request_id": request_id})
        return response


def complete(result: Result, inv: Invocation) -> bytes:
    """The ``InvokeComplete`` event for ``result``: the error's type and message when it failed."""
    log_result = _log_result(result.logs) if inv.log_tail else None
    if result.ok and not result.function_error:
        return eventstream.invoke_complete(log_result=log_result)
    try:
        error = json.loads(result.payload)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = {}
    return eventstream.invoke_complete(
        str(error.get("errorType") or result.function_error or "Unhandled"),
        str(error.get("errorMessage") or result.error_summary()),
        log_result)


def add_invoke_stream_routes(app: web.Application) -> None:
    app.router.add_post(PATH, invoke_with_response_stream)
