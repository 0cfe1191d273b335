"""The router's ASGI app, built by each router replica from its own settings.

POST endpoints (``serve/router/endpoints/``) are dispatched straight to the router's one request
function, without FastAPI's routing, dependency and exception layers (most of the router's cost on
a light model, ``bench/README.md``). Everything else (``GET`` routes, ``/docs``, ``/openapi.json``)
is a FastAPI app, which also documents the POST endpoints. Both sit behind the same middleware:
request ids and body limits, API keys, CORS. The same app object serves the router's own listener
and Ray's port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from configs.infer_models import HealthResponse, ReadyResponse
from serve.router.auth import ApiKeyMiddleware
from serve.router.endpoints.base import EndpointRoute
from serve.router.http_errors import as_serving_error, install_error_handlers, response_for_exception
from serve.router.middleware import RequestContextMiddleware, cors, route_path
from serve.router.openapi import ERROR_RESPONSES

if TYPE_CHECKING:
    from serve.router.router import MultiModelRouter

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def build_router_app(router: "MultiModelRouter", api_keys: list[bytes]) -> ASGIApp:
    config = router.config
    app: ASGIApp = PostRoutes(documented_api(router), {r.path: r for r in router.routes}, router.serve_route)
    app = ApiKeyMiddleware(app, api_keys, config.open_paths)
    app = RequestContextMiddleware(app, config.max_request_body_bytes)
    return cors(app, config.cors_origins)  # outermost: answers preflights before the key check


def documented_api(router: "MultiModelRouter") -> FastAPI:
    api = FastAPI(
        title="Multi-model inference API",
        description="One API for every model in model_config.yaml: POST /v1/infer, the OpenAI-compatible "
                    "endpoints, GET /v1/models, GET /v1/health.",
        version="0.1.0",
    )
    for route in router.routes:
        api.add_api_route(route.path, _serve(router, route), methods=["POST"], summary=route.summary,
                          openapi_extra=route.openapi_body(), response_model=None, responses=ERROR_RESPONSES)
    api.add_api_route("/v1/models", router.list_models, methods=["GET"], responses=ERROR_RESPONSES)
    for action, method in (("load", router.load_model), ("unload", router.unload_model)):
        api.add_api_route(f"/v1/models/{{model_id:path}}/{action}", _admin(router, method), methods=["POST"],
                          summary=f"Admin: {action} a model (behind the API key when keys are set)",
                          responses=ERROR_RESPONSES, name=f"{action}_model")
    api.add_api_route("/v1/models/{model_id:path}", router.model_info, methods=["GET"], responses=ERROR_RESPONSES)
    health_responses = {**ERROR_RESPONSES, 503: {"model": HealthResponse, "description": "Some model is not ready"}}
    api.add_api_route("/v1/health", router.health, methods=["GET"], response_model=HealthResponse, responses=health_responses)
    ready_responses = {**ERROR_RESPONSES, 503: {"model": ReadyResponse, "description": "Some model cannot serve"}}
    for path in ("/health", "/ping"):
        api.add_api_route(path, router.ready, methods=["GET"], response_model=ReadyResponse, responses=ready_responses)
    install_error_handlers(api)
    return api


def _admin(router: "MultiModelRouter", method: Callable[[str], Awaitable[dict[str, Any]]]) -> Callable[..., Awaitable[Any]]:
    async def endpoint(model_id: str) -> dict[str, Any]:
        try:
            return await method(model_id)
        except Exception as exc:
            error = as_serving_error(exc, model_id)
            if error is not None and error is not exc:
                raise error from None
            raise

    return endpoint


def _serve(router: "MultiModelRouter", route: EndpointRoute) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await router.serve_route(route, request)

    endpoint.__name__ = route.__class__.__name__
    return endpoint


class PostRoutes:
    """``POST`` to an endpoint path runs ``serve(route, request)``; anything else goes to ``app``."""

    def __init__(self, app: ASGIApp, routes: dict[str, EndpointRoute],
                 serve: Callable[[EndpointRoute, Request], Awaitable[Response]]) -> None:
        self.app, self.routes, self.serve = app, routes, serve

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = self.routes.get(route_path(scope)) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await self.serve(route, Request(scope, receive))
        except Exception as exc:  # noqa: BLE001 - answered like the FastAPI app's exception handlers answer it
            response = response_for_exception(scope, exc)
        await response(scope, receive, send)
