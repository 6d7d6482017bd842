"""Lambda's version and alias operations on the Invoke port, so boto3 and the AWS CLI manage versions of a
running router: PublishVersion, ListVersionsByFunction, GetAlias, ListAliases, and GetFunction /
GetFunctionConfiguration with a ``Qualifier`` (through ``control_api.QUALIFIED``).

Aliases belong to the config file (``functions.NAME.aliases``): CreateAlias and UpdateAlias are not
offered. Paths and shapes are botocore's; authentication is the Invoke API's.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from router.config.models import FunctionConfig
from router.core.versions import LATEST, AliasRouting, Versions
from router.errors import RouterError, VersionError
from router.http import aws_errors
from router.http.context import CTX
from router.http.control_api import (
    CONTROL_API,
    PUBLISHED,
    QUALIFIED,
    ControlApi,
    _begin,
    _body_json,
    _json,
    _page,
    invalid,
    lambda_timestamp,
)
from router.http.invoke_api import parse_function_name
from router.state.versions import VersionRow

_FN = "/2015-03-31/functions/{FunctionName}"


def _not_found(message: str, request_id: str) -> web.Response:
    return aws_errors.aws_error(404, "ResourceNotFoundException", message, request_id, message_key="Message")


def version_configuration(api: ControlApi, name: str, row: VersionRow) -> dict[str, Any]:
    """The FunctionConfiguration of a published version: its own config, code hash and qualified ARN."""
    out = api.function_configuration(name)
    fn = FunctionConfig.model_validate({**json.loads(row.config), "code": "."})
    out.update(
        FunctionArn=f"{api.config.aws.function_arn(name)}:{row.version}", Version=str(row.version),
        Description=row.description, Timeout=int(-(-fn.timeout // 1)), MemorySize=fn.memory,
        CodeSha256=row.code_sha256, CodeSize=row.code_size, LastModified=lambda_timestamp(row.published_at))
    out.pop("Runtime", None)
    out.pop("Handler", None)
    if fn.runtime is not None:
        out["Runtime"] = fn.runtime
    if fn.handler is not None:
        out["Handler"] = fn.handler
    return out


def alias_configuration(api: ControlApi, name: str, alias: str, routing: AliasRouting,
                        description: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AliasArn": f"{api.config.aws.function_arn(name)}:{alias}",
        "Name": alias,
        "FunctionVersion": routing.version,
        "Description": description,
        "RevisionId": f"{name}-{alias}-{routing.version}-{routing.extra}-{routing.weight}",
    }
    if routing.extra is not None:
        out["RoutingConfig"] = {"AdditionalVersionWeights": {routing.extra: routing.weight}}
    return out


Begun = tuple[ControlApi, Versions, str, str, bytes]


async def _begin_versions(request: web.Request) -> Begun | web.Response:
    """Credentials, then the function the path names (unqualified): the API, the versions, a request id,
    the name and the body; or the refusal."""
    api, rid, body = await _begin(request)
    if isinstance(body, web.Response):
        return body
    raw = request.match_info["FunctionName"]
    ref = parse_function_name(raw)
    if ref is None:
        return invalid(f"FunctionName: not a function name or ARN, got {raw!r}", rid)
    ctx = request.app[CTX]
    if ref.name not in ctx.config.functions:  # the running config (a reload changes it)
        return aws_errors.not_found(api.config.aws.function_arn(ref.name), rid)
    versions = ctx.versions
    if versions is None:
        return aws_errors.service_error("this router runs no versions (no state store)", rid)
    return api, versions, rid, ref.name, body


async def publish_version(request: web.Request) -> web.Response:
    begun = await _begin_versions(request)
    if isinstance(begun, web.Response):
        return begun
    api, versions, rid, name, body = begun
    data = _body_json(body, rid)
    if isinstance(data, web.Response):
        return data
    description = data.get("Description", "")
    if not isinstance(description, str) or len(description) > 256:
        return invalid("Description: a string of at most 256 characters is required", rid)
    try:
        row, _created = await versions.publish(name, description)
    except VersionError as exc:
        return invalid(str(exc), rid)
    except RouterError as exc:  # the state store
        return aws_errors.service_error(f"function '{name}': could not publish a version: {exc}", rid)
    expected = data.get("CodeSha256")
    if expected and expected != row.code_sha256:
        return invalid(f"CodeSha256 ({expected}) is different from the code's ({row.code_sha256}); the code "
                       "changed: check it and publish again", rid)
    return _json(version_configuration(api, name, row), rid, status=201)


async def list_versions(request: web.Request) -> web.Response:
    begun = await _begin_versions(request)
    if isinstance(begun, web.Response):
        return begun
    api, versions, rid, name, _body = begun
    rows = await versions.list(name)
    items = [api.function_configuration(name), *(version_configuration(api, name, r) for r in rows)]
    return _page(items, request, "Versions", rid)


async def list_aliases(request: web.Request) -> web.Response:
    begun = await _begin_versions(request)
    if isinstance(begun, web.Response):
        return begun
    api, versions, rid, name, _body = begun
    wanted = request.query.get("FunctionVersion")
    specs = request.app[CTX].config.functions[name].aliases
    items = [alias_configuration(api, name, alias, routing, specs[alias].description)
             for alias, routing in sorted(versions.aliases(name).items())
             if alias in specs and (wanted is None or routing.version == wanted)]
    return _page(items, request, "Aliases", rid)


async def get_alias(request: web.Request) -> web.Response:
    begun = await _begin_versions(request)
    if isinstance(begun, web.Response):
        return begun
    api, versions, rid, name, _body = begun
    alias = request.match_info["Name"]
    routing = versions.aliases(name).get(alias)
    specs = request.app[CTX].config.functions[name].aliases
    if routing is None or alias not in specs:
        return _not_found(f"Alias not found: {api.config.aws.function_arn(name)}:{alias}", rid)
    return _json(alias_configuration(api, name, alias, routing, specs[alias].description), rid)


async def get_qualified(request: web.Request, operation: str) -> web.Response:
    """GetFunction or GetFunctionConfiguration of ``name:qualifier`` / ``?Qualifier=``: a version number
    or an alias (its version's configuration, with the alias's ARN)."""
    begun = await _begin_versions(request)
    if isinstance(begun, web.Response):
        return begun
    api, versions, rid, name, _body = begun
    ref = parse_function_name(request.match_info["FunctionName"])
    assert ref is not None
    qualifier = request.query.get("Qualifier") or ref.qualifier or LATEST
    arn = f"{api.config.aws.function_arn(name)}:{qualifier}"
    if qualifier.isdigit():
        number = int(qualifier)
    else:
        routing = versions.aliases(name).get(qualifier)
        if routing is None:
            return _not_found(f"Function not found: {arn}", rid)
        number = int(routing.version)
    row = await versions.get(name, number)
    if row is None:
        return _not_found(f"Function not found: {arn}", rid)
    config = version_configuration(api, name, row)
    config["FunctionArn"] = arn
    if operation == "GetFunctionConfiguration":
        return _json(config, rid)
    return _json({"Configuration": config, "Tags": {}}, rid)


async def published_configurations(api: ControlApi, name: str) -> list[dict[str, Any]]:
    """The FunctionConfigurations of ``name``'s published versions, oldest first (ListFunctions with
    ``FunctionVersion=ALL``)."""
    versions = api.versions
    if versions is None:
        return []
    return [version_configuration(api, name, row) for row in await versions.list(name)]


def add_version_routes(app: web.Application) -> None:
    """The version and alias operations on ``app`` (after ``control_api.add_control_routes``)."""
    assert CONTROL_API in app, "add the control API's routes first"
    app[QUALIFIED] = get_qualified
    app[PUBLISHED] = published_configurations
    r = app.router
    r.add_post(_FN + "/versions", publish_version)
    r.add_get(_FN + "/versions", list_versions)
    r.add_get(_FN + "/aliases", list_aliases)
    r.add_get(_FN + "/aliases/{Name}", get_alias)
