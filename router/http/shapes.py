"""The event shape of a webhook route (``payload: v2 | v1 | alb``), chosen once when the route is built:
how a request becomes the event, how the function's result becomes the response, and how the router's
own refusals look in that gateway's words."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from router.config.models import RouteConfig, RouterConfig, WebhookSourceConfig
from router.http import alb, apigw, apigw_v1
from router.invocation import Result

OnMalformed = Callable[[str], None]


class Shape:
    """API Gateway HTTP API, payload format 2.0 (``payload: v2``, the default)."""

    name = "v2"
    malformed_status = 500
    request_id_header: str | None = "apigw-requestid"
    hint = "return statusCode, headers, cookies and body as API Gateway's payload format 2.0 expects"

    def __init__(self, route: RouteConfig, config: RouterConfig) -> None:
        assert isinstance(route.source, WebhookSourceConfig)
        self.route = route
        self.source: WebhookSourceConfig = route.source
        self.config = config

    def event(self, request: web.Request, body: bytes, request_id: str,
              params: Mapping[str, str] | None) -> dict[str, Any]:
        return apigw.build_event(
            request, body, route_key=apigw.route_key(self.source.methods, request.method, self.source.path),
            request_id=request_id, account_id=self.config.aws.account_id, api_id=self.route.name,
            path_parameters=params)

    def response(self, result: Result, on_malformed: OnMalformed) -> web.Response:
        return apigw.map_result(result, on_malformed)

    def internal_error(self) -> web.Response:
        return apigw.internal_error()

    def throttled(self) -> web.Response:
        return apigw.too_many_requests()

    def too_large(self) -> web.Response:
        return apigw.payload_too_large()


class RestShape(Shape):
    """API Gateway REST API, Lambda proxy integration (``payload: v1``)."""

    name = "v1"
    malformed_status = 502
    request_id_header = "x-amzn-RequestId"
    hint = ("return an object with statusCode, headers or multiValueHeaders, and body as a string, as API "
            "Gateway's Lambda proxy integration expects")

    def event(self, request: web.Request, body: bytes, request_id: str,
              params: Mapping[str, str] | None) -> dict[str, Any]:
        return apigw_v1.build_event(
            request, body, resource=self.source.path, request_id=request_id,
            account_id=self.config.aws.account_id, api_id=self.route.name, path_parameters=params)

    def response(self, result: Result, on_malformed: OnMalformed) -> web.Response:
        return apigw_v1.map_result(result, on_malformed)

    def internal_error(self) -> web.Response:
        return apigw_v1.internal_error()

    def throttled(self) -> web.Response:
        return apigw_v1.internal_error()  # the Lambda API refused the invocation: API Gateway's 500

    def too_large(self) -> web.Response:
        return apigw.payload_too_large()  # the same answer as the HTTP API's


class AlbShape(Shape):
    """Application Load Balancer target (``payload: alb``)."""

    name = "alb"
    malformed_status = 502
    request_id_header = None  # a load balancer adds none

    def __init__(self, route: RouteConfig, config: RouterConfig) -> None:
        super().__init__(route, config)
        self.multi_value = self.source.alb_multi_value_headers
        self.target_group = alb.target_group_arn(config.aws.region, config.aws.account_id, route.name)
        field = "multiValueHeaders" if self.multi_value else "headers"
        self.hint = (f"return an object with statusCode, {field} and body as a string, as an Application "
                     "Load Balancer expects" + (" (alb_multi_value_headers is on)" if self.multi_value else
                                                " (alb_multi_value_headers is off)"))

    def event(self, request: web.Request, body: bytes, request_id: str,
              params: Mapping[str, str] | None) -> dict[str, Any]:
        return alb.build_event(request, body, target_group=self.target_group, multi_value=self.multi_value)

    def response(self, result: Result, on_malformed: OnMalformed) -> web.Response:
        return alb.map_result(result, multi_value=self.multi_value, on_malformed=on_malformed)

    def internal_error(self) -> web.Response:
        return alb.internal_error()

    def throttled(self) -> web.Response:
        return alb.service_unavailable()

    def too_large(self) -> web.Response:
        return alb.payload_too_large()


def shape_for(route: RouteConfig, config: RouterConfig) -> Shape:
    """The shape ``route``'s ``payload`` names."""
    assert isinstance(route.source, WebhookSourceConfig)
    kind = {"v2": Shape, "v1": RestShape, "alb": AlbShape}[route.source.payload]
    return kind(route, config)
