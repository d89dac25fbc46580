"""HTTP routes. Each handler parses, authenticates, calls one lifecycle function and
renders the answer; errors are RFC 9457 problem+json and bad input is never a 500."""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from .bodies import read_body, read_form, read_json
from .errors import BrokerError, Forbidden, InvalidRequest, Unauthenticated, Unavailable
from .identity import InvalidDpopProof
from . import alternate, oauth
from .model import STATES, TERMINAL, Proposal, check_request_id, parse_outcome
from .openapi import openapi_document

if TYPE_CHECKING:
    from .app import Broker

log = logging.getLogger("jitgate.api")

PROBLEM = "application/problem+json"
MAX_WAIT_S = 60
RETRY_AFTER_S = 1  # the Retry-After of a 503 whose error names no other


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def problem_response(err: BrokerError, instance: str | None = None) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="jitgate"'} if err.status == 401 else None
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None or err.status == 503:  # every 503 is retryable: say when
        headers = {**(headers or {}), "Retry-After": str(int(retry_after if retry_after is not None else RETRY_AFTER_S))}
    return Response(orjson.dumps(err.to_problem(instance)), status_code=err.status, media_type=PROBLEM, headers=headers)


def make_routes(broker: "Broker") -> list[Route]:
    """The agent API, token endpoints, discovery and health."""
    s = broker.settings
    life = broker.lifecycle
    limit = s.max_body_bytes

    async def agent_of(request: HttpRequest):
        try:
            agent, _claims = await broker.verifier.verify_agent(request.headers.get("authorization"))
        except BrokerError:
            broker.metrics.count("auth_failures")
            raise
        await alternate.check(life, agent)  # suspended for alternate paths: 403 agent-disabled
        return agent

    def rid(request: HttpRequest) -> str:
        return check_request_id(request.path_params["id"])

    async def propose(request: HttpRequest) -> Response:
        agent = await agent_of(request)
        proposal = Proposal.parse(await read_json(request, limit))
        req, created = await life.submit(agent, proposal, request.headers.get("idempotency-key"))
        headers = {"Location": f"/v1/escalations/{req.id}"}
        return json_response(req.to_public(), 201 if created else 200, headers)

    async def status(request: HttpRequest) -> Response:
        agent = await agent_of(request)
        request_id = rid(request)
        raw_wait = request.query_params.get("wait", "0")
        try:
            wait = float(raw_wait)
        except ValueError:
            raise InvalidRequest("'wait' must be a number of seconds") from None
        if not 0 <= wait <= MAX_WAIT_S:
            raise InvalidRequest(f"'wait' must be between 0 and {MAX_WAIT_S} seconds")
        known = request.query_params.get("known")
        if known is not None and known not in STATES:
            raise InvalidRequest(f"'known' must be one of {', '.join(STATES)}")
        if wait == 0:
            return json_response((await life.get_for_agent(request_id, agent)).to_public())
        waiter = broker.wakeups.register(request_id)
        broker.metrics.waiters.inc()
        try:
            req = await life.watch_for_agent(request_id, agent, wait)
            # With `known`, a change the caller has not seen yet (it happened between its
            # last read and this call) answers at once instead of after the whole wait.
            seen_first = req.status
            if req.status not in TERMINAL and (known is None or req.status == known) and not broker.wakeups.draining:
                end = time.monotonic() + wait
                while await broker.wakeups.wait(waiter, req.status, max(0.0, end - time.monotonic())):
                    seen = req.status
                    # Re-marked watched too: the mark may be gone with a restarted Redis.
                    req = await life.watch_for_agent(request_id, agent, max(1.0, end - time.monotonic()))
                    if req.status != seen or not waiter.take_resync():
                        break
                if broker.wakeups.draining and req.status == seen_first:
                    # Shutting down (a rolling restart): nothing changed; the agent asks again
                    # after Retry-After and another replica (or this one, restarted) answers.
                    raise Unavailable("this broker is shutting down; ask again")
        finally:
            broker.metrics.waiters.dec()
            broker.wakeups.unregister(request_id, waiter)
        return json_response(req.to_public())

    async def collect(request: HttpRequest) -> Response:
        agent = await agent_of(request)
        request_id = rid(request)
        # RFC 9449: a DPoP proof binds the token to the prover's key (cnf.jkt, token_type DPoP).
        # htu is this endpoint's public URL: the issuer (as agents see it) plus the path.
        proofs = request.headers.getlist("dpop")
        if len(proofs) > 1:
            # RFC 9449 section 4.3: "there is not more than one DPoP HTTP request header field".
            raise InvalidDpopProof("more than one DPoP header; send exactly one proof")
        proof = proofs[0] if proofs else None
        jkt = None
        if proof is not None or s.require_dpop:
            jkt = await broker.verifier.verify_dpop(proof, method="POST", url=f"{s.issuer}{request.url.path}")
        token = await life.collect(request_id, agent, jkt=jkt)
        return json_response(token.to_json(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def complete(request: HttpRequest) -> Response:
        agent = await agent_of(request)
        # Optional: {"outcome": {...}} (issue 18, item 6); an empty body completes as before.
        raw = await read_body(request, limit)
        body = None
        if raw.strip():
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise InvalidRequest("send the body as application/json")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise InvalidRequest(f"the body is not valid JSON: {e.msg} at position {e.pos}") from None
        return json_response((await life.complete(rid(request), agent, parse_outcome(body))).to_public())

    async def withdraw(request: HttpRequest) -> Response:
        agent = await agent_of(request)
        return json_response((await life.cancel(rid(request), agent)).to_public())

    async def introspect(request: HttpRequest) -> Response:
        server, _ = await broker.verifier.verify_resource_server(request.headers.get("authorization"))
        token = oauth.token_param(await read_form(request, limit))
        return json_response(await oauth.introspect(life, token, server=server), headers={"Cache-Control": "no-store"})

    async def revoke(request: HttpRequest) -> Response:
        auth = request.headers.get("authorization")
        server = None
        try:
            server, _ = await broker.verifier.verify_resource_server(auth)
            by = f"resource_server:{server.id}"
        except BrokerError:
            agent, _ = await broker.verifier.verify_agent(auth)
            by = f"agent:{agent.id}"
        token = oauth.token_param(await read_form(request, limit))
        await oauth.revoke(life, token, by=by, server=server)
        return Response(b"", status_code=200)

    async def jwks(request: HttpRequest) -> Response:
        return json_response(broker.keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})

    async def metadata(request: HttpRequest) -> Response:
        return json_response(oauth.metadata(s))

    async def audit_key(request: HttpRequest) -> Response:
        # The audit public key (docs/audit.md): what `jitgate audit check-proof --key` needs.
        return json_response(broker.lifecycle.audit.key.document(), headers={"Cache-Control": "public, max-age=300"})

    async def healthz(request: HttpRequest) -> Response:
        return json_response({"status": "ok"})

    said: dict[str, str] = {}  # per component, the last not-ready detail logged (each said once)

    def _log_state(name: str, detail: str | None) -> None:
        if said.get(name) != detail:
            said[name] = detail
            if detail is not None:
                log.warning("readiness: %s is not ready: %s", name, detail)
            else:
                log.info("readiness: %s is ready again", name)

    async def readyz(request: HttpRequest) -> Response:
        # States only: component names and ok / not ready. What went wrong (URLs, exception
        # text) goes to the log, never to an unauthenticated caller.
        try:
            await broker.redis.ping()
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            _log_state("redis", f"{e.__class__.__name__}: {e}")
            raise Unavailable("not ready: redis", components={"redis": "not ready"}) from None
        _log_state("redis", None)
        components = {"redis": "ok"}
        # Desks may not be ready (e.g. Teams knows no approvals conversation yet). That does
        # not change the status: a desk must keep receiving traffic to fix what it lacks.
        for desk in broker.desks:
            check = getattr(desk, "readiness", None)
            if check is None:
                continue
            try:
                state = await check()
                detail = None if state.get("ready") else str(state.get("detail") or "not ready")
            except Exception as e:  # noqa: BLE001 - a detail, never a failed probe
                detail = f"readiness check failed ({e.__class__.__name__}: {e})"
            _log_state(desk.name, detail)
            components[desk.name] = "ok" if detail is None else "not ready"
        return json_response({"status": "ready", "components": components})

    metrics_token = s.metrics_token.reveal().encode()

    async def metrics(request: HttpRequest) -> Response:
        from .metrics import CONTENT_TYPE  # noqa: PLC0415

        if metrics_token:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), metrics_token):
                raise Unauthenticated("/metrics needs Authorization: Bearer <JITGATE_METRICS_TOKEN>")
        elif not s.metrics_public:
            raise Forbidden("/metrics is off: set JITGATE_METRICS_TOKEN (scrapers send it as a bearer token), "
                            "or JITGATE_METRICS_PUBLIC=1 to serve it without authentication")
        waiting, _absorbed, _decided = await broker.store.approvers_load()
        broker.metrics.set_waiting(waiting)  # the approvers' load, as shared by every replica
        return Response(broker.metrics.render(), media_type=CONTENT_TYPE)

    async def escalation(request: HttpRequest) -> Response:
        return await (withdraw if request.method == "DELETE" else status)(request)

    async def openapi(request: HttpRequest) -> Response:
        return json_response(openapi_document(s.issuer))

    return [
        Route("/v1/escalations", propose, methods=["POST"]),
        # One route for both methods, so a 405 here lists both in Allow (RFC 9110 section 15.5.6).
        Route("/v1/escalations/{id}", escalation, methods=["GET", "DELETE"]),
        Route("/v1/escalations/{id}/token", collect, methods=["POST"]),
        Route("/v1/escalations/{id}/complete", complete, methods=["POST"]),
        Route("/v1/introspect", introspect, methods=["POST"]),
        Route("/v1/revoke", revoke, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
        Route("/.well-known/jitgate-audit-key", audit_key, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


def exception_handlers(get_broker) -> dict:
    """Render every error as problem+json; an unexpected one is logged and hidden.

    ``get_broker`` returns the broker once built (handlers are registered before the
    lifespan builds it, because Starlette fixes its middleware at the first call).
    """

    async def on_broker_error(request: HttpRequest, exc: BrokerError) -> Response:
        broker = get_broker()
        if broker is not None:
            broker.metrics.count("http_errors", code=exc.code)
        return problem_response(exc, request.url.path)

    async def on_http(request: HttpRequest, exc: HTTPException) -> Response:
        err = BrokerError(exc.detail or "request failed")
        err.status = exc.status_code
        err.code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        err.title = "Not found" if exc.status_code == 404 else "Request failed"
        headers = {"Allow": exc.headers["Allow"]} if exc.headers and "Allow" in exc.headers else None
        resp = problem_response(err, request.url.path)
        if headers:
            resp.headers.update(headers)
        return resp

    async def on_redis(request: HttpRequest, exc: RedisError) -> Response:
        # A Redis failure no module turned into a problem: retryable, never a 500 (issue 21.5).
        log.warning("Redis failed on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
        return await on_broker_error(request, Unavailable(f"Redis is unavailable: {exc.__class__.__name__}"))

    async def on_unexpected(request: HttpRequest, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        err = BrokerError("internal error; it was logged")
        err.status, err.code, err.title = 500, "internal", "Internal error"
        return problem_response(err, request.url.path)

    return {BrokerError: on_broker_error, HTTPException: on_http, RedisError: on_redis, Exception: on_unexpected}
