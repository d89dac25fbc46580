"""The SSF endpoints (SSF 1.0 sections 7 and 8, RFC 8936 polling). Each handler authenticates the
receiver (a registered resource server's assertion, exactly as for introspection), parses the
request and calls one :class:`Streams` or :class:`Transmitter` function."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from ..bodies import read_body, read_json
from ..errors import BrokerError, InvalidRequest
from .events import transmitter_metadata

if TYPE_CHECKING:
    from ..app import Broker

NO_STORE = {"Cache-Control": "no-store"}


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=NO_STORE)


def make_routes(broker: "Broker") -> list[Route]:
    """Discovery, stream management, verification and the poll endpoint."""
    s = broker.settings
    limit = s.max_body_bytes

    async def receiver(request: HttpRequest) -> str:
        try:
            server, _ = await broker.verifier.verify_resource_server(request.headers.get("authorization"))
        except BrokerError:
            broker.metrics.count("auth_failures")
            raise
        return server.id

    def streams():
        return broker.ssf.streams

    async def configuration(request: HttpRequest) -> Response:
        return Response(orjson.dumps(transmitter_metadata(s)), media_type="application/json")

    async def stream(request: HttpRequest) -> Response:
        rid = await receiver(request)
        st = streams()
        if request.method == "GET":
            sid = request.query_params.get("stream_id")
            if sid is None:
                return _json([st.public(r) for r in await st.of_receiver(rid)])
            return _json(st.public(await st.own(rid, sid)))
        if request.method == "DELETE":
            sid = request.query_params.get("stream_id")
            if sid is None:
                raise InvalidRequest("'stream_id' is required as a query parameter")
            await st.delete(rid, sid)
            return Response(b"", status_code=204, headers=NO_STORE)
        body = await read_json(request, limit)
        if request.method == "POST":
            return _json(st.public(await st.create(rid, body)), 201)
        return _json(st.public(await st.update(rid, body, replace=request.method == "PUT")))

    async def status(request: HttpRequest) -> Response:
        rid = await receiver(request)
        st = streams()
        if request.method == "GET":
            return _json(st.status_view(await st.own(rid, request.query_params.get("stream_id"))))
        return _json(st.status_view(await st.set_status(rid, await read_json(request, limit))))

    async def add_subject(request: HttpRequest) -> Response:
        rid = await receiver(request)
        await streams().check_subject(rid, await read_json(request, limit))
        return Response(b"", status_code=200, headers=NO_STORE)

    async def remove_subject(request: HttpRequest) -> Response:
        rid = await receiver(request)
        await streams().check_subject(rid, await read_json(request, limit))
        return Response(b"", status_code=204, headers=NO_STORE)

    async def verify(request: HttpRequest) -> Response:
        rid = await receiver(request)
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise InvalidRequest("the verification request must be a JSON object")
        rec = await streams().own(rid, body.get("stream_id"))
        state = body.get("state")
        if state is not None and (not isinstance(state, str) or len(state) > 1024):
            raise InvalidRequest("'state' must be a string of at most 1024 characters")
        await streams().verification_allowed(rec["stream_id"])
        await broker.ssf.verify(rec, state)
        return Response(b"", status_code=204, headers=NO_STORE)

    async def poll(request: HttpRequest) -> Response:
        rid = await receiver(request)
        rec = await streams().own(rid, request.path_params["stream_id"])
        raw = await read_body(request, limit)
        if not raw.strip():
            body = {}  # RFC 8936 section 2.4: an empty poll asks for SETs with the defaults
        else:
            if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                raise InvalidRequest("send the body as application/json")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise InvalidRequest(f"the body is not valid JSON: {e.msg} at position {e.pos}") from None
        return _json(await broker.ssf.poll(rec, body, request.is_disconnected))

    return [
        Route("/.well-known/ssf-configuration", configuration, methods=["GET"]),
        Route("/ssf/stream", stream, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        Route("/ssf/status", status, methods=["GET", "POST"]),
        Route("/ssf/subjects:add", add_subject, methods=["POST"]),
        Route("/ssf/subjects:remove", remove_subject, methods=["POST"]),
        Route("/ssf/verify", verify, methods=["POST"]),
        Route("/ssf/poll/{stream_id}", poll, methods=["POST"]),
    ]
