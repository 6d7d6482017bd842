"""JSON for the requests no route takes, where aiohttp would answer a text/plain 404 or 405 page.

Paths of the AWS APIs (``/2015-03-31/...`` and the other dated Lambda API prefixes) get an AWS
REST-JSON error an SDK can parse (``UnknownOperationException``); every other path gets API Gateway's
``{"message": "Not Found"}`` (or ``"Method Not Allowed"``, with the ``Allow`` header). The request's path
is not echoed: a webhook path may be built from a secret.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from router.http import aws_errors
from router.http.context import CTX
from router.http.control_api import CONTROL_API
from router.invocation import new_request_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AWS_API = re.compile(r"^/\d{4}-\d{2}-\d{2}/")
"""Lambda's API paths start with the API version date (``/2015-03-31/functions/...``)."""


def _hint(request: web.Request) -> str:
    ctx = request.app.get(CTX)
    if ctx is not None and not ctx.config.server.invoke_api:
        return "the router's Invoke API is turned off (server.invoke_api: false)"
    if CONTROL_API not in request.app:
        return "the router serves the Lambda Invoke API only: POST /2015-03-31/functions/{name}/invocations"
    return ("the router serves Lambda's Invoke API and these control operations: ListFunctions, "
            "GetFunction, GetFunctionConfiguration, Get/Put/DeleteFunctionConcurrency, "
            "Get/PutFunctionEventInvokeConfig, List/Get/UpdateEventSourceMapping, GetFunctionUrlConfig, "
            "ListFunctionUrlConfigs, PublishVersion, ListVersionsByFunction, ListAliases, GetAlias; "
            "functions, routes and aliases are changed in the config file (README: Pause, resume and "
            "Lambda's control API)")


@web.middleware
async def json_error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's 404 and 405 pages into JSON; other responses and errors pass through."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        if AWS_API.match(request.path):
            response = aws_errors.aws_error(
                405, "UnknownOperationException",
                f"Unknown operation: {request.method} is not served on this path (it serves "
                f"{exc.headers.get('Allow', 'none')}); {_hint(request)}",
                new_request_id())
            response.headers.update(allow)
            return response
        return web.json_response({"message": "Method Not Allowed"}, status=405, headers=allow)
    except web.HTTPNotFound:
        if AWS_API.match(request.path):
            return aws_errors.aws_error(404, "UnknownOperationException",
                                        f"Unknown operation; {_hint(request)}", new_request_id())
        return web.json_response({"message": "Not Found"}, status=404)
