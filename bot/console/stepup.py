"""The console's step-up pages (issue 19, item 6): the Security keys page, the landing page of
a chat step-up link, and the challenge an approval with a key answers.

Each handler checks the session (and the CSRF token on a change) as every console route does;
what the key proves is checked in :mod:`bot.console.securitykeys`, and the approval itself
goes through the lifecycle (:meth:`bot.console.views.ConsoleViews.approve`).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.kit.stepup import PATH, StepUpLinks
from broker.bodies import read_form
from broker.errors import AuditError, BrokerError, NotApprover, Unavailable
from broker.model import PENDING, check_request_id

from .refusals import Refused
from .securitykeys import StepUpFailed, WebAuthn

# The console's views (bot.console.views.ConsoleViews), whose plumbing these routes use; not
# imported, so the two modules form no import circle.
ConsoleViews = Any
log = logging.getLogger("jitgate.console")

STEP_UP_SESSION = "step-up"
# A session a chat link opened is for that approval: it lasts this long, not a working day.
STEP_UP_SESSION_TTL_S = 15 * 60
_JSON_HEADERS = {"Cache-Control": "no-store"}


class StepUpViews:
    """Routes for security keys and step-up links, on the console's plumbing."""

    def __init__(self, views: ConsoleViews) -> None:
        self.v = views
        self.keys: WebAuthn | None = None
        self.links: StepUpLinks | None = None

    def bind(self, ctx) -> None:
        self.keys = WebAuthn(ctx.redis, ctx.settings.redis_prefix, rp_id=ctx.settings.step_up_rp_id,
                             origin=ctx.settings.step_up_origin)
        self.links = StepUpLinks(ctx.keys)

    def routes(self, w) -> list[Route]:
        j = _json_plainly
        return [
            Route("/console/keys", w(self.keys_page), methods=["GET"]),
            Route("/console/keys/options", j(self.register_options), methods=["POST"]),
            Route("/console/keys/register", j(self.register), methods=["POST"]),
            Route("/console/keys/remove", w(self.remove), methods=["POST"]),
            Route(PATH, w(self.link_page), methods=["GET"]),
            Route(PATH, w(self.use_link), methods=["POST"]),
            Route("/console/requests/{id}/step-up", j(self.assertion_options), methods=["POST"]),
        ]

    # ------------------------------------------------------------------ keys
    async def keys_page(self, request: HttpRequest, *, error: str | None = None, status: int = 200) -> Response:
        found = await self.v._session(request)
        if found is None:
            return self.v._signin()
        session, approver = found
        ctx = await self.v._common(session, approver)
        ctx.update(error=error, keys=await self.keys.keys(approver.id), manage=session.via != STEP_UP_SESSION,
                   rp_id=self.keys.rp_id, next="/console/keys")
        return self.v._html("keys.html", status, **ctx)

    async def _json_guard(self, request: HttpRequest):
        try:
            return await self.v._guard(request)
        except Refused as r:
            raise _JsonRefusal(r.status, r.message) from None

    async def _manage_guard(self, request: HttpRequest):
        session, approver, form = await self._json_guard(request)
        if session.via == STEP_UP_SESSION:
            # A chat click opened this session: a key added here would let whoever holds the chat
            # account prove "presence" with their own key. Keys are managed after a real sign-in.
            raise _JsonRefusal(403, "this session began with a step-up link from chat; sign in with a console link "
                                    "(jitgate console login) to add or remove security keys")
        return session, approver, form

    async def register_options(self, request: HttpRequest) -> Response:
        try:
            session, approver, _form = await self._manage_guard(request)
            options = await self.keys.registration_options(approver.id, session.id_digest)
        except _JsonRefusal as r:
            return r.response()
        except BrokerError as e:
            return _json_error(e.status, e.detail)
        return Response(options, media_type="application/json", headers=_JSON_HEADERS)

    async def register(self, request: HttpRequest) -> Response:
        try:
            session, approver, form = await self._manage_guard(request)
            key = await self.keys.register(approver.id, session.id_digest, form.get("credential", ""),
                                           form.get("label", ""), now=self.v._now())
        except _JsonRefusal as r:
            return r.response()
        except BrokerError as e:
            return _json_error(e.status, e.detail)
        await self.v._audit("console.key_registered", {"approver": approver.id, "channel": "console"},
                            key=key.ref, label=key.label, session=session.ref)
        await self.v.sessions.flash(session, {"kind": "ok", "text": f"Security key “{key.label}” registered."})
        return JSONResponse({"ok": True, "key": key.ref}, headers=_JSON_HEADERS)

    async def remove(self, request: HttpRequest) -> Response:
        try:
            session, approver, form = await self._manage_guard(request)
        except _JsonRefusal as r:
            return self.v._refusal(r.as_refused())
        key_id = form.get("key", "")
        if not await self.keys.remove(approver.id, key_id):
            return await self.keys_page(request, error="Not done: you have no such key.", status=404)
        await self.v._audit("console.key_removed", {"approver": approver.id, "channel": "console"},
                            key=key_id[:16], session=session.ref)
        await self.v.sessions.flash(session, {"kind": "ok", "text": "Security key removed."})
        return RedirectResponse("/console/keys", status_code=303)

    # ------------------------------------------------------------------ approving with a key
    async def assertion_options(self, request: HttpRequest) -> Response:
        """A challenge for approving this request with one of the signed-in approver's keys."""
        try:
            session, approver, _form = await self._json_guard(request)
            req = await self.v.ctx.lifecycle.get(check_request_id(request.path_params["id"]))
            life = self.v.ctx.lifecycle
            life.check_approver(approver, req)
            if req.status != PENDING or not life.may_still_decide(approver, req):
                raise NotApprover("this request is not waiting for your approval")
            if life.step_up_needed(approver, req) is None:
                raise StepUpFailed("this approval needs no security key")
            options = await self.keys.assertion_options(approver.id, session.id_digest, req.id)
        except _JsonRefusal as r:
            return r.response()
        except BrokerError as e:
            return _json_error(e.status, e.detail)
        return Response(options, media_type="application/json", headers=_JSON_HEADERS)

    async def verify(self, session, approver, request_id: str, assertion: str) -> str:
        """The step-up an approval brings: ``"webauthn"`` once the assertion verified (raises
        :class:`StepUpFailed` otherwise)."""
        await self.keys.verify_assertion(approver.id, session.id_digest, request_id, assertion, now=self.v._now())
        return "webauthn"

    # ------------------------------------------------------------------ links from chat
    async def link_page(self, request: HttpRequest) -> Response:
        token = request.query_params.get("token", "")
        link = await self.links.peek(token, now=self.v._now()) if token else None
        if link is None:
            return _bad_link(self.v)
        try:
            req = await self.v.ctx.lifecycle.get(link.request_id)
        except BrokerError:
            return _bad_link(self.v)
        return self.v._html("stepup.html", link=link, req=req, token=token)

    async def use_link(self, request: HttpRequest) -> Response:
        """Take the link (once), sign its person in if needed, and show the request to approve with a key."""
        if not self.v._same_origin(request):
            return self.v._message(403, "Refused", "Refused: this form was sent from another site.")
        try:
            form = await read_form(request, 16 * 1024)
        except BrokerError as e:
            return self.v._message(400, "Refused", f"Refused: {e.detail}.")
        token = form.get("token", "")
        now = self.v._now()
        link = await self.links.peek(token, now=now)
        if link is None:
            return _bad_link(self.v)
        current = await self.v._session(request)
        if current is not None and current[0].approver != link.approver:
            # Leave the link unused: it is for someone else than the person signed in here.
            return self.v._message(403, "This link is for someone else",
                                   f"You are signed in as {current[0].approver}; this step-up link is for "
                                   f"{link.approver}.", hint="Nothing was changed.")
        link = await self.links.consume(token, now=now)
        if link is None:
            return _bad_link(self.v)
        if self.v.ctx.directory.approver(link.approver) is None:
            return self.v._message(403, "Not an approver", f"'{link.approver}' is not in the approvers file.")
        response = RedirectResponse(f"/console/requests/{link.request_id}", status_code=303)
        actor = {"approver": link.approver, "channel": "console", "platform_user": link.platform_user}
        if current is None:
            cookie, session = await self.v.sessions.create(link.approver, now=now, via=STEP_UP_SESSION,
                                                           ttl_s=STEP_UP_SESSION_TTL_S)
            self.v._set_cookie(response, cookie)
            await self.v._audit("console.signed_in", actor, session=session.ref, via=STEP_UP_SESSION,
                                request_id=link.request_id)
        return response


class _JsonRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return _json_error(self.status, self.message)

    def as_refused(self) -> Refused:
        return Refused(self.status, self.message)


def _json_plainly(handler):
    """Failures outside the ceremony's answers (Redis down, a bug) as JSON the page shows, never a bare 500."""

    async def endpoint(request: HttpRequest) -> Response:
        try:
            return await handler(request)
        except (RedisError, Unavailable, AuditError):
            log.exception("console: %s %s failed", request.method, request.url.path)
            return _json_error(503, "the broker cannot reach its database; nothing was changed, try again")
        except Exception:
            log.exception("console: %s %s failed", request.method, request.url.path)
            return _json_error(500, "the console hit an unexpected error; it was logged")

    return endpoint


def _json_error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=_JSON_HEADERS)


def _bad_link(views: ConsoleViews) -> Response:
    return views._message(
        400, "This step-up link does not work",
        "The link was already used, has expired (step-up links last 10 minutes), or was copied incompletely.",
        hint="Press Approve on the request's message again for a new one. Nothing was changed.")
