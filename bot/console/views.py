"""The console's HTTP routes: each one authenticates the session, checks the CSRF token
on a change, calls one lifecycle function as the signed-in approver and renders HTML.

The approver's rights are exactly the lifecycle's checks (the same as a chat click);
this module only decides which buttons to show, using ``lifecycle.check_approver``.
"""

from __future__ import annotations

import logging
import math
from importlib import resources
from urllib.parse import urlsplit

import jinja2
from redis.exceptions import RedisError
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bot import render
from broker import audit, rules
from broker.bodies import read_form
from broker.errors import (
    AuditError, BrokerError, InvalidRequest, NotApprover, NotFound, PayloadTooLarge, Unavailable,
)
from broker.killswitch import Selector
from broker.notify import DeskContext
from broker.model import ACTIVE, APPROVED, PENDING, check_request_id, iso

from . import queries
from .reviews import available as reviews_available
from .reviews import breakglass_reviews
from .refusals import Refused
from .sessions import Session, Sessions
from .stepup import StepUpViews

log = logging.getLogger("jitgate.console")

CHANNEL = "console"
MAX_FORM_BYTES = 16 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "stepup.js": "text/javascript; charset=utf-8",
}


def _ts(epoch: float | None) -> str:
    return iso(epoch) or "—"


def _dur(seconds) -> str:
    """A duration in every desk's words (:func:`bot.render.fmt_duration`); ``—`` when there is none."""
    return "—" if seconds is None else render.fmt_duration(seconds)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.console", "templates"),
        autoescape=True,  # everything an agent wrote is escaped; no template marks it safe
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = _ts
    env.filters["dur"] = _dur
    env.filters["delegation_links"] = render.delegation_links
    env.filters["asked_again"] = render.asked_again_line
    env.filters["excluded_line"] = render.excluded_line
    env.filters["linked_line"] = render.linked_line
    env.filters["history_lines"] = render.history_lines
    env.filters["outcome_line"] = render.outcome_line
    env.filters["outcome_links"] = render.outcome_links
    return env


class ConsoleViews:
    """Route handlers bound to one broker's desk context (set in :meth:`bind` when the desk starts)."""

    def __init__(self, settings, *, chain_cache_s: float = 30.0) -> None:
        self.settings = settings
        self.secure = settings.issuer.startswith("https://")
        # ``__Host-`` makes the browser refuse the cookie unless it is Secure, host-only, Path=/.
        self.cookie = "__Host-jitgate-console" if self.secure else "jitgate-console"
        self.cookie_path = "/" if self.secure else "/console"
        self.env = _environment()
        self.chain = queries.ChainStatus(ttl_s=chain_cache_s)
        self.ctx: DeskContext | None = None
        self.sessions: Sessions | None = None
        self.stepup = StepUpViews(self)
        self._static = {name: (resources.files("bot.console") / "static" / name).read_bytes() for name in _STATIC}

    def bind(self, ctx: DeskContext) -> None:
        self.ctx = ctx
        self.sessions = Sessions(ctx.redis, ctx.settings.redis_prefix)
        self.stepup.bind(ctx)

    def routes(self) -> list[Route]:
        w = self._plainly
        return [
            Route("/console", w(self.index), methods=["GET"]),
            Route("/console/", w(self.index), methods=["GET"]),
            Route("/console/login", w(self.login_page), methods=["GET"]),
            Route("/console/login", w(self.login), methods=["POST"]),
            Route("/console/logout", w(self.logout), methods=["POST"]),
            Route("/console/changes", self.changes, methods=["GET"]),
            Route("/console/requests/{id}", w(self.detail), methods=["GET"]),
            Route("/console/requests/{id}/approve", w(self.approve), methods=["POST"]),
            Route("/console/requests/{id}/deny", w(self.deny), methods=["POST"]),
            Route("/console/requests/{id}/revoke", w(self.revoke), methods=["POST"]),
            Route("/console/requests/{id}/acknowledge", w(self.acknowledge), methods=["POST"]),
            Route("/console/killswitch", w(self.kill_page), methods=["GET"]),
            Route("/console/killswitch", w(self.kill_preview), methods=["POST"]),
            Route("/console/killswitch/confirm", w(self.kill_confirm), methods=["POST"]),
            Route("/console/load", w(self.load_page), methods=["GET"]),
            Route("/console/load/reinstate", w(self.reinstate_agent), methods=["POST"]),
            Route("/console/static/{name}", self.static, methods=["GET"]),
            *self.stepup.routes(w),
        ]

    def _plainly(self, handler):
        """Failures outside the lifecycle's answers (Redis down, a bug) as a page that says so."""

        async def endpoint(request: HttpRequest) -> Response:
            try:
                return await handler(request)
            except (RedisError, Unavailable, AuditError):
                log.exception("console: %s %s failed", request.method, request.url.path)
                return self._message(503, "The broker cannot reach its database",
                                     "Redis did not answer, so this page could not be shown.",
                                     hint="Try again in a moment. If you had just pressed a button, reload the "
                                          "console to see whether it took effect.")
            except Exception:
                log.exception("console: %s %s failed", request.method, request.url.path)
                return self._message(500, "Something went wrong",
                                     "The console hit an unexpected error; it was logged.",
                                     hint="If you had just pressed a button, reload the console to see whether "
                                          "it took effect.")

        return endpoint

    # ------------------------------------------------------------------ plumbing
    def _now(self) -> float:
        return self.ctx.lifecycle.clock.now()

    def _html(self, template: str, status: int = 200, **ctx) -> Response:
        body = self.env.get_template(template).render(**ctx)
        return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    def _message(self, status: int, title: str, message: str, *, hint: str | None = None) -> Response:
        return self._html("message.html", status, title=title, message=message, hint=hint)

    def _signin(self, status: int = 401, note: str | None = None) -> Response:
        return self._html("signin.html", status, note=note)

    async def _session(self, request: HttpRequest) -> tuple[Session, object] | None:
        """The signed-in session and its approver (re-read from the directory), or None."""
        session = await self.sessions.get(request.cookies.get(self.cookie), now=self._now())
        if session is None:
            return None
        approver = self.ctx.directory.approver(session.approver)
        if approver is None:  # removed from the approvers file: the session ends with it
            await self.sessions.end(session)
            return None
        return session, approver

    def _same_origin(self, request: HttpRequest) -> bool:
        """Refuse cross-site form posts (a second line behind the CSRF token)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser that sends Origin; the CSRF token still decides
        own = {_origin(self.settings.issuer), f"{request.url.scheme}://{request.headers.get('host', '')}"}
        return origin in own

    async def _guard(self, request: HttpRequest) -> tuple[Session, object, dict]:
        """Session, origin and CSRF checks for a state-changing form."""
        if not self._same_origin(request):
            raise Refused(403, "Refused: this form was sent from another site.")
        found = await self._session(request)
        if found is None:
            raise Refused(401, "You are not signed in (or your session ended). Sign in again with a new link.")
        session, approver = found
        try:
            form = await read_form(request, MAX_FORM_BYTES)
        except PayloadTooLarge as e:
            raise Refused(413, f"Refused: {e.detail}.") from None
        except BrokerError:
            form = {}  # not a form at all: it carries no CSRF token either
        if not session.csrf_ok(form.get("csrf")):
            raise Refused(403, "Refused: the form's security token (CSRF) is missing or wrong. "
                               "Reload the page and try again.")
        return session, approver, form

    def _refusal(self, r: Refused) -> Response:
        if r.status == 401:
            return self._signin(401, r.message)
        return self._message(r.status, "Refused", r.message, hint="Nothing was changed.")

    def _set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(self.cookie, value, max_age=self.sessions.session_ttl_s, path=self.cookie_path,
                            secure=self.secure, httponly=True, samesite="strict")

    def _clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path=self.cookie_path, secure=self.secure, httponly=True,
                               samesite="strict")

    async def _audit(self, kind: str, actor: dict, **data) -> None:
        await audit.record(self.ctx.store, kind, iso(self._now()), actor, **data)

    # ------------------------------------------------------------------ sign-in
    async def login_page(self, request: HttpRequest) -> Response:
        token = request.query_params.get("token", "")
        approver_id = await self.sessions.peek_link(token, now=self._now()) if token else None
        if approver_id is None:
            return _bad_link(self)
        return self._html("login.html", approver_id=approver_id, token=token)

    async def login(self, request: HttpRequest) -> Response:
        if not self._same_origin(request):
            return self._refusal(Refused(403, "Refused: this sign-in was sent from another site."))
        try:
            form = await read_form(request, MAX_FORM_BYTES)
        except BrokerError as e:
            return self._message(400, "Refused", f"Refused: {e.detail}.")
        approver_id = await self.sessions.consume_link(form.get("token", ""), now=self._now())
        if approver_id is None:
            return _bad_link(self)
        if self.ctx.directory.approver(approver_id) is None:
            return self._message(403, "Not an approver",
                                 f"'{approver_id}' is not in the approvers file, so it cannot sign in.")
        old = await self.sessions.get(request.cookies.get(self.cookie), now=self._now())
        if old is not None:
            await self.sessions.end(old)  # a fresh id at every sign-in (no session fixation)
        cookie, session = await self.sessions.create(approver_id, now=self._now())
        await self._audit("console.signed_in", {"approver": approver_id, "channel": CHANNEL}, session=session.ref)
        response = RedirectResponse("/console", status_code=303, headers=SECURITY_HEADERS)
        self._set_cookie(response, cookie)
        return response

    async def logout(self, request: HttpRequest) -> Response:
        try:
            session, approver, _form = await self._guard(request)
        except Refused as r:
            return self._refusal(r)
        await self.sessions.end(session)
        await self._audit("console.signed_out", {"approver": approver.id, "channel": CHANNEL}, session=session.ref)
        response = self._signin(200, "You are signed out.")
        self._clear_cookie(response)
        return response

    # ------------------------------------------------------------------ pages
    async def index(self, request: HttpRequest) -> Response:
        found = await self._session(request)
        if found is None:
            return self._signin()
        session, approver = found
        return await self._render_index(session, approver)

    async def _common(self, session: Session, approver) -> dict:
        b = self.ctx
        return {
            "me": approver,
            "csrf": session.csrf,
            "posture": await b.lifecycle.posture(),
            "chain": await self.chain.get(b),
            "seq": await queries.audit_seq(b),
            "flash": await self.sessions.pop_flash(session),
            "now": self._now(),
            "security_group": b.settings.security_group,
        }

    async def _render_index(self, session: Session, approver, *, error: str | None = None, status: int = 200) -> Response:
        b = self.ctx
        life = b.lifecycle
        ctx = await self._common(session, approver)
        open_reqs = await queries.open_requests(b)
        pending = []
        for req in (r for r in open_reqs if r.status == PENDING):
            pending.append(self._decidable(req, approver))
        pending.sort(key=lambda item: (not item["can_decide"], item["req"].deadline or math.inf))
        grants = [r for r in open_reqs if r.status in (APPROVED, ACTIVE)]
        events = await queries.recent_events(b)
        history = await queries.recent_closed(b, events)
        ctx.update(
            error=error,
            pending=pending,
            grants=grants,
            history=history,
            trails=queries.trails(events),
            reviews=await breakglass_reviews(b, approver),
            reviews_available=reviews_available(b),
            max_duration=lambda req: rules.approvable_max(req, life.settings.max_duration_s),
            next="/console",
        )
        return self._html("index.html", status, **ctx)

    def _decidable(self, req, approver) -> dict:
        """Whether ``approver`` may decide ``req`` now, and if not, why (lifecycle's words)."""
        if rules.already_approved(approver, req):
            return {"req": req, "can_decide": False, "why": "You approved this request; it waits for more approvals."}
        try:
            self.ctx.lifecycle.check_approver(approver, req)
        except NotApprover as e:
            return {"req": req, "can_decide": False, "why": e.detail}
        uncounted = rules.why_not_counted(approver, req)  # a mixed quorum whose groups of theirs are full
        if uncounted is not None and req.status == PENDING:
            return {"req": req, "can_decide": False, "why": uncounted}
        return {"req": req, "can_decide": True, "why": None,
                "step_up": self.ctx.lifecycle.step_up_needed(approver, req)}

    async def detail(self, request: HttpRequest) -> Response:
        found = await self._session(request)
        if found is None:
            return self._signin()
        session, approver = found
        return await self._render_detail(session, approver, request.path_params["id"])

    async def _render_detail(self, session: Session, approver, raw_id: str, *, error: str | None = None,
                             status: int = 200) -> Response:
        try:
            req = await self.ctx.lifecycle.get(check_request_id(raw_id))
        except BrokerError:
            return self._message(404, "Not found", "There is no request with this id.")
        ctx = await self._common(session, approver)
        events, complete = await queries.trail(self.ctx, req.id)
        ctx.update(
            error=error,
            item=self._decidable(req, approver) if req.status == PENDING else {"req": req, "can_decide": False, "why": None},
            events=events,
            complete=complete,
            max_duration=lambda r: rules.approvable_max(r, self.ctx.lifecycle.settings.max_duration_s),
            next=f"/console/requests/{req.id}",
        )
        return self._html("request.html", status, **ctx)

    async def changes(self, request: HttpRequest) -> Response:
        """The change counter the page polls (the audit chain's length)."""
        found = await self._session(request)
        if found is None:
            return JSONResponse({"error": "signed out"}, status_code=401, headers={"Cache-Control": "no-store"})
        return JSONResponse({"seq": await queries.audit_seq(self.ctx)}, headers={"Cache-Control": "no-store"})

    async def static(self, request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(self._static[name], media_type=_STATIC[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    # ------------------------------------------------------------------ decisions
    async def approve(self, request: HttpRequest) -> Response:
        async def act(life, rid, approver, session, form):
            duration = _duration_from_form(form)
            # With a security key's answer (step-up), it is verified before anything is recorded;
            # without one, the lifecycle refuses an approval that needs it.
            assertion = form.get("assertion")
            step_up = await self.stepup.verify(session, approver, rid, assertion) if assertion else None
            req = await life.approve(rid, approver, channel=CHANNEL, platform_user=f"console:{session.ref}",
                                     duration_s=duration, step_up=step_up)
            if req.status == PENDING:
                need = int(req.decision.get("approvals_required", 1))
                return (f"Your approval is recorded ({len(req.approvals)} of {need}); "
                        f"it waits for {render.missing_words(req)}.")
            if req.status == APPROVED and approver.id in req.approvers:
                how = f" for {_dur(req.approved_duration_s)}" if req.approved_duration_s else ""
                return f"Approved{how}: {req.proposal.action} on {req.proposal.target}. The agent can collect its token now."
            return f"The request is {req.status}."

        return await self._decide(request, act)

    async def deny(self, request: HttpRequest) -> Response:
        async def act(life, rid, approver, session, form):
            req = await life.deny(rid, approver, channel=CHANNEL, reason=form.get("reason", ""),
                                  platform_user=f"console:{session.ref}")
            return f"Denied: {req.proposal.action} on {req.proposal.target}. The agent sees your reason."

        return await self._decide(request, act)

    async def revoke(self, request: HttpRequest) -> Response:
        async def act(life, rid, approver, session, form):
            req = await life.revoke_as(rid, approver, reason=form.get("reason", ""), channel=CHANNEL,
                                       platform_user=f"console:{session.ref}")
            return f"Revoked: the grant for {req.proposal.action} on {req.proposal.target} has ended."

        return await self._decide(request, act)

    async def acknowledge(self, request: HttpRequest) -> Response:
        async def act(life, rid, approver, session, form):
            if not reviews_available(self.ctx):
                raise NotFound("this broker records no break-glass reviews")
            req = await self.ctx.breakglass.acknowledge(rid, approver, comment=form.get("comment", ""),
                                                           channel=CHANNEL)
            return f"Review acknowledged: break-glass by {req.engineer} ({req.proposal.action} on {req.proposal.target})."

        return await self._decide(request, act)

    # ------------------------------------------------------------------ kill switch
    async def kill_page(self, request: HttpRequest) -> Response:
        """The kill switch's form (the security group; others are told why not)."""
        found = await self._session(request)
        if found is None:
            return self._signin()
        session, approver = found
        return await self._render_kill(session, approver)

    async def _render_kill(self, session: Session, approver, *, error: str | None = None, status: int = 200,
                           **more) -> Response:
        ctx = await self._common(session, approver)
        why = rules.why_not_kill_switch(approver, self.ctx.settings.security_group)
        ctx.update({"error": error, "allowed": why is None, "why": why, "preview": None, **more})
        return self._html("killswitch.html", status, **ctx)

    async def kill_preview(self, request: HttpRequest) -> Response:
        """Step one: what the kill switch would end now; nothing changes."""
        try:
            session, approver, form = await self._guard(request)
        except Refused as r:
            return self._refusal(r)
        scope, value, reason = (form.get(k, "").strip() for k in ("scope", "value", "reason"))
        try:
            selector = Selector.of(scope, value or None)
            if not reason:
                raise InvalidRequest("a reason is required for the kill switch")
            pending, grants = await self.ctx.lifecycle.kill_switch_preview(selector, approver)
        except BrokerError as e:
            return await self._render_kill(session, approver, error=f"Not done: {e.detail}", status=e.status)
        return await self._render_kill(session, approver, preview={"pending": pending, "grants": grants},
                                       selector_text=selector.describe(), scope=selector.scope, value=selector.value,
                                       reason=reason)

    async def kill_confirm(self, request: HttpRequest) -> Response:
        """Step two, the confirmation: pull the switch (the core checks again who may)."""
        try:
            session, approver, form = await self._guard(request)
        except Refused as r:
            return self._refusal(r)
        try:
            selector = Selector.of(form.get("scope", ""), form.get("value") or None)
            result = await self.ctx.lifecycle.kill_switch(selector, approver, reason=form.get("reason", ""),
                                                          channel=CHANNEL, platform_user=f"console:{session.ref}")
        except BrokerError as e:
            return await self._render_kill(session, approver, error=f"Not done: {e.detail}", status=e.status)
        await self.sessions.flash(session, {"kind": "ok", "text": result.summary()})
        return RedirectResponse("/console", status_code=303, headers=SECURITY_HEADERS)

    async def load_page(self, request: HttpRequest) -> Response:
        """The approvers' load (issue 19, item 7): what /metrics shows, for people; and the agents
        suspended for alternate paths, which the security group may reinstate here."""
        found = await self._session(request)
        if found is None:
            return self._signin()
        session, approver = found
        return await self._render_load(session, approver)

    async def _render_load(self, session: Session, approver, *, error: str | None = None, status: int = 200) -> Response:
        ctx = await self._common(session, approver)
        waiting, absorbed, decided = await self.ctx.store.approvers_load()
        groups = sorted(set(waiting) | set(decided))
        rows = [{"group": g, "waiting": waiting.get(g, 0), "decided": decided.get(g, (0, 0.0))[0],
                 "mean": (decided[g][1] / decided[g][0]) if decided.get(g, (0, 0.0))[0] else None} for g in groups]
        may_reinstate = rules.why_not_kill_switch(approver, self.ctx.settings.security_group) is None
        ctx.update({"error": error, "rows": rows, "absorbed": absorbed, "may_reinstate": may_reinstate,
                    "suspended": await self.ctx.store.suspended_agents()})
        return self._html("load.html", status, **ctx)

    async def reinstate_agent(self, request: HttpRequest) -> Response:
        """A security member lifts an agent's alternate-path suspension (the core checks who may)."""
        try:
            session, approver, form = await self._guard(request)
        except Refused as r:
            return self._refusal(r)
        agent_id = form.get("agent", "").strip()
        try:
            done = await self.ctx.lifecycle.reinstate_agent(agent_id, approver, channel=CHANNEL)
        except BrokerError as e:
            return await self._render_load(session, approver, error=f"Not done: {e.detail}", status=e.status)
        text = f"agent {agent_id} reinstated" if done else f"agent {agent_id} was not suspended"
        await self.sessions.flash(session, {"kind": "ok", "text": text})
        return RedirectResponse("/console/load", status_code=303, headers=SECURITY_HEADERS)

    async def _decide(self, request: HttpRequest, act) -> Response:
        try:
            session, approver, form = await self._guard(request)
        except Refused as r:
            return self._refusal(r)
        nxt = _safe_next(form.get("next"))
        raw_id = request.path_params["id"]
        try:
            rid = check_request_id(raw_id)
        except InvalidRequest:
            return self._message(404, "Not found", "There is no request with this id.", hint="Nothing was changed.")
        try:
            message = await act(self.ctx.lifecycle, rid, approver, session, form)
        except BrokerError as e:
            text = f"Not done: {e.detail}"
            status = e.status
            if nxt.startswith("/console/requests/"):
                return await self._render_detail(session, approver, raw_id, error=text, status=status)
            return await self._render_index(session, approver, error=text, status=status)
        await self.sessions.flash(session, {"kind": "ok", "text": message})
        return RedirectResponse(nxt, status_code=303, headers=SECURITY_HEADERS)


def _bad_link(views: ConsoleViews) -> Response:
    return views._message(
        400, "This sign-in link does not work",
        "The link was already used, has expired (links last 10 minutes), or was copied incompletely.",
        hint="Ask for a new one on the broker's machine: jitgate console login <your-approver-id>",
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _safe_next(value: str | None) -> str:
    """Only the console's own pages (no open redirect)."""
    if value and (value == "/console" or value.startswith("/console/requests/")) and "//" not in value \
            and all(c.isalnum() or c in "/-_" for c in value):
        return value
    return "/console"


def _duration_from_form(form: dict) -> int | None:
    """``duration_min`` (approve for less time) in seconds; empty means the full duration."""
    raw = (form.get("duration_min") or "").strip()
    if not raw:
        return None
    try:
        minutes = float(raw)
    except ValueError:
        raise InvalidRequest("the duration must be a number of minutes") from None
    if not math.isfinite(minutes) or minutes <= 0:
        raise InvalidRequest("the duration must be a positive number of minutes")
    return max(1, round(minutes * 60))
