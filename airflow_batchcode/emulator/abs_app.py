"""The ABS Occupation Coding Service's async batch API, emulated as a FastAPI app.

:func:`create_abs_app` wires the routes (OAuth2 token, topics and models, batch and real-time
coding, presigned storage under ``/_storage``, and the ``/_emulator`` admin routes), the error
handlers and the middleware onto one :class:`AbsService`. The contract is the service's own
documentation (see the emulator's README for the decisions it leaves open).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Header, Request
from starlette.responses import Response

from airflow_batchcode.emulator import storage
from airflow_batchcode.emulator.abs_service import AbsService
from airflow_batchcode.emulator.admin import create_service_app, install_storage_errors
from airflow_batchcode.emulator.common import read_limited
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.contract import (
    MAX_REALTIME_BODY,
    MSG_BAD_BODY,
    MSG_INTERNAL,
    TOPICS,
    ApiError,
    OAuthError,
    json_response,
)
from airflow_batchcode.emulator.processing import code_file
from airflow_batchcode.emulator.schemas import (
    CODE_REQUEST,
    ERROR_RESPONSES,
    TOKEN_REQUEST,
    CodeResponseBody,
    CreatedBody,
    ModelBody,
    OAuthErrorBody,
    StatusBody,
    TokenBody,
    TopicBody,
    manual_parameters,
)

__all__ = ["AbsService", "code_file", "create_abs_app"]


def _service(request: Request) -> AbsService:
    service: AbsService = request.app.state.service
    return service


async def _api_client(
    request: Request,
    authorization: Annotated[str | None, Header(description="The raw access token (no Bearer prefix)")] = None,
) -> str:
    return _service(request).admit(authorization)


ApiClient = Annotated[str, Depends(_api_client)]


def _base(request: Request) -> str:
    return str(request.base_url)


def _status(request: Request) -> Response:
    service = _service(request)
    client = service.admit(request.headers.get("authorization"))
    params = request.path_params
    topic = params["topic"]
    service.model(topic, params.get("model"))
    return json_response(service.status(client, topic, params["operation_id"], _base(request)))


def _create(request: Request, client: str, topic: str, model: str | None) -> Response:
    """Create a batch operation with ``model`` (``None``: the topic's latest)."""
    service = _service(request)
    return json_response(service.create_operation(client, topic, service.model(topic, model), _base(request)))


async def _code(request: Request, topic: str, model: str | None) -> Response:
    """Code the records of the request body in real time with ``model`` (``None``: the topic's latest)."""
    service = _service(request)
    chosen = service.model(topic, model)
    return json_response(service.code_now(await read_limited(request, MAX_REALTIME_BODY), chosen))


def _install_oauth_errors(app: FastAPI) -> None:
    @app.exception_handler(OAuthError)
    async def oauth_error(request: Request, exc: OAuthError) -> Response:
        return json_response(exc.body, exc.status)


def _install_api(app: FastAPI) -> None:
    @app.post(
        "/oauth2/token",
        tags=["auth"],
        responses={200: {"model": TokenBody}, **{s: {"model": OAuthErrorBody} for s in (400, 401, 403)}},
        openapi_extra=TOKEN_REQUEST,
    )
    async def token(request: Request) -> Response:
        """OAuth2 client-credentials grant (``Authorization: Basic``)."""
        try:
            body = await read_limited(request, 64 << 10)
        except ApiError:
            raise OAuthError(400, "invalid_request", "Request body too large") from None
        form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        issued = _service(request).issue_token(request.headers.get("authorization"), form)
        return json_response(issued, headers={"Cache-Control": "no-store"})

    @app.get("/v1/topics", tags=["topics"], responses={200: {"model": list[TopicBody]}, **ERROR_RESPONSES})
    async def topics(client: ApiClient) -> Response:
        """The coding topics."""
        return json_response([{"uriName": name, "fullName": full} for name, full in TOPICS])

    @app.get(
        "/v1/topics/{topic}/models", tags=["topics"], responses={200: {"model": list[ModelBody]}, **ERROR_RESPONSES}
    )
    async def models(request: Request, topic: str, client: ApiClient) -> Response:
        """The topic's models, oldest first."""
        service = _service(request)
        service.model(topic, None)
        return json_response([m.info.to_json() for m in service.models[topic]])

    @app.post(
        "/v1/topics/{topic}/batch-code", tags=["batch"], responses={200: {"model": CreatedBody}, **ERROR_RESPONSES}
    )
    async def create_latest(request: Request, topic: str, client: ApiClient) -> Response:
        """Create a batch operation with the topic's latest model."""
        return _create(request, client, topic, None)

    @app.post(
        "/v1/topics/{topic}/models/{model}/batch-code",
        tags=["batch"],
        responses={200: {"model": CreatedBody}, **ERROR_RESPONSES},
    )
    async def create_with_model(request: Request, topic: str, model: str, client: ApiClient) -> Response:
        """Create a batch operation with the given model."""
        return _create(request, client, topic, model)

    # The status routes are the hot path (thousands of pollers): they read their parameters
    # themselves instead of through FastAPI's per-request validation, and document them by hand.
    @app.get(
        "/v1/topics/{topic}/batch-code/operations/{operation_id}",
        tags=["batch"],
        responses={200: {"model": StatusBody}, **ERROR_RESPONSES},
        openapi_extra=manual_parameters("topic", "operation_id"),
    )
    async def status_latest(request: Request) -> Response:
        """An operation's status."""
        return _status(request)

    @app.get(
        "/v1/topics/{topic}/models/{model}/batch-code/operations/{operation_id}",
        tags=["batch"],
        responses={200: {"model": StatusBody}, **ERROR_RESPONSES},
        openapi_extra=manual_parameters("topic", "model", "operation_id"),
    )
    async def status_with_model(request: Request) -> Response:
        """An operation's status (the model is checked, then ignored)."""
        return _status(request)

    code_responses: dict[int | str, dict[str, Any]] = {
        200: {"model": CodeResponseBody | list[CodeResponseBody]},
        **ERROR_RESPONSES,
    }

    @app.post("/v1/topics/{topic}/code", tags=["real-time"], responses=code_responses, openapi_extra=CODE_REQUEST)
    async def code_latest(request: Request, topic: str, client: ApiClient) -> Response:
        """Code one record or up to 300 with the topic's latest model."""
        return await _code(request, topic, None)

    @app.post(
        "/v1/topics/{topic}/models/{model}/code",
        tags=["real-time"],
        responses=code_responses,
        openapi_extra=CODE_REQUEST,
    )
    async def code_with_model(request: Request, topic: str, model: str, client: ApiClient) -> Response:
        """Code one record or up to 300 with the given model."""
        return await _code(request, topic, model)


def _install_storage(app: FastAPI) -> None:
    @app.put("/_storage/{bucket}/{key:path}", include_in_schema=False)
    async def put_object(request: Request, bucket: str, key: str) -> Response:
        return await storage.upload(_service(request), request, bucket, key)

    @app.api_route("/_storage/{bucket}/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_object(request: Request, bucket: str, key: str) -> Response:
        return await storage.download(_service(request), request, bucket, key)


def create_abs_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build the emulator app. ``app.state.service`` is its :class:`AbsService`; call its ``close()``
    when done (the server does)."""
    return create_service_app(
        AbsService(config or EmulatorConfig()),
        title="ABS Occupation Coding Service (emulator)",
        description="Async batch coding, real-time coding and OAuth2 tokens, as documented by the ABS.",
        install=(install_storage_errors, _install_oauth_errors, _install_api, _install_storage),
        bad_request=MSG_BAD_BODY,
        internal=MSG_INTERNAL,
    )
