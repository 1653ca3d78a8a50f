"""The dashboard's pages, served by the command API's HTTP process under ``/ui``.

Server-rendered (Jinja2) with a little vanilla JavaScript and no build step:

- ``/ui/`` the overview, kept live by server-sent events from the hub (``/ui/events``);
- ``/ui/deployments/ID`` timeline, analysis with charts, snapshot, operating buttons;
- ``/ui/approvals`` what waits for the signed-in person, with the evidence;
- ``/ui/audit`` the log filtered, the hash chain's status, a deployment at time T;
- ``/ui/metrics`` the DORA keys as charts.

Every action is a POST with the session's CSRF token, handed to the command API in
this process with the session's credential (``_command``): the API authorises,
signs, publishes and audits exactly as for any client. A POST without a session is
refused 401, one without a valid CSRF token or from another origin 403 — both
recorded as ``shiplog.access.refused`` like the API's own refusals.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sse_starlette.sse import EventSourceResponse

from adapters.identity import AccessDenied, Forbidden, Principal, Unauthenticated
from consumers.dashboard.chart import bar_chart
from consumers.dashboard.core import overview
from consumers.dashboard.hub import Hub
from consumers.dashboard.session import COOKIE, CSRF_FIELD, Session, Sessions
from consumers.dashboard.views import analysis, timeline
from events.deployment import deployment_stream
from producers.api.auth import client_address, refuse
from producers.api.deps import ApiDeps
from shiplog.audit import show as audit_show
from shiplog.dora import dora, format_duration
from shiplog.status import deployment_status, load_deployment

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
PREFIX = "/ui"
MAX_FORM_BYTES = 64 * 1024
AUDIT_LIMIT = 200
ACTIONS = ("promote", "pause", "resume", "abort")
SECURITY_HEADERS = {
    # inline SVG is markup, not an image or a style: nothing inline needs allowing
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["duration"] = format_duration
templates.filters["num"] = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, float) else v
templates.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)


def _deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.dashboard_sessions
    return sessions


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.dashboard_hub
    return hub


def _page(
    name: str, request: Request, status: int = 200, me: tuple[Session, Principal] | None = None, **ctx: Any
) -> HTMLResponse:
    session, who = me if me else (None, None)
    html = templates.get_template(name).render(
        prefix=PREFIX,
        me=who,
        csrf=session.csrf if session else "",
        csrf_field=CSRF_FIELD,
        msg=request.query_params.get("msg", ""),
        operator=_is_operator(request, who) if who else False,
        **ctx,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _is_operator(request: Request, who: Principal) -> bool:
    roles = _deps(request).operator_roles
    return not roles or who.holds_any(roles)


async def _signed_in(request: Request) -> tuple[Session, Principal] | None:
    """The session and its principal, the credential checked again now."""
    deps = _deps(request)
    sessions = _sessions(request)
    session = sessions.get(request.cookies.get(COOKIE), deps.clock())
    if session is None:
        return None
    try:
        who = await deps.authenticator.authenticate(session.credential)
    except AccessDenied:
        sessions.end(session.id)
        return None
    return session, who


def _to_signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/signin?next={quote(target)}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # no Origin: a non-browser client; SameSite=Strict and the CSRF token still hold
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", request.url.netloc)


async def _guard(request: Request, form: Mapping[str, str]) -> tuple[Session, Principal]:
    """A POST's session, principal and CSRF token — or a refusal, audited."""
    if not _same_origin(request):
        await refuse(request, Forbidden("cross-origin form post to the dashboard"))
    me = await _signed_in(request)
    if me is None:
        await refuse(request, Unauthenticated("no dashboard session"))
    session, who = me
    if not session.csrf_ok(form.get(CSRF_FIELD)):
        await refuse(
            request,
            Forbidden("missing or invalid CSRF token", principal=who.name, token_id=who.token_id),
        )
    return session, who


async def _command(request: Request, session: Session, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST to the command API in this process, as the session's principal, from the
    browser's address (what the API records as the client)."""
    deps = _deps(request)
    client = client_address(request, deps.trust_proxy) or "unknown"
    transport = httpx.ASGITransport(app=request.app, client=(client, 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://shiplog", timeout=30) as http:
        return await http.post(path, json=body, headers={"Authorization": f"Bearer {session.credential}"})


def _answered(
    request: Request, me: tuple[Session, Principal], answer: httpx.Response, back: str, done: str
) -> Response:
    if answer.status_code == 202:
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}msg={quote(done)}", status_code=303)
    try:
        detail = str(answer.json().get("detail"))
    except ValueError:
        detail = answer.text
    return _page("error.html", request, status=answer.status_code, me=me, detail=detail, back=back)


def _local(target: str | None) -> str:
    """A redirect target inside the dashboard (never an open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return PREFIX + "/"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def router() -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)

    # -- signing in --------------------------------------------------------------------

    @r.get("/signin")
    async def signin_form(request: Request, next: str = "") -> Response:
        return _page("signin.html", request, next=_local(next), error=None)

    @r.post("/signin")
    async def signin(request: Request) -> Response:
        form = await _form(request)
        deps = _deps(request)
        target = _local(form.get("next"))
        if not _same_origin(request):
            await refuse(request, Forbidden("cross-origin sign-in to the dashboard"))
        credential = form.get("token", "").strip()
        try:
            if not credential:
                raise Unauthenticated("no token given at sign-in")
            await deps.authenticator.authenticate(credential)
        except AccessDenied as denied:
            try:
                await refuse(request, denied)  # audited like the API's refusals
            except HTTPException as refused:
                return _page(
                    "signin.html", request, status=refused.status_code, next=target, error=denied.reason
                )
        session = _sessions(request).create(credential, deps.clock())
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=PREFIX,
            max_age=int(_sessions(request).lifetime.total_seconds()),
        )
        return response

    @r.post("/signout")
    async def signout(request: Request) -> Response:
        form = await _form(request)
        session, _ = await _guard(request, form)
        _sessions(request).end(session.id)
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # -- the overview, live --------------------------------------------------------------

    @r.get("/")
    async def home(request: Request) -> Response:
        me = await _signed_in(request)
        if me is None:
            return _to_signin(request)
        hub = _hub(request)
        return _page("overview.html", request, me=me, board=overview(hub.board), seq=hub.seq)

    @r.get("/overview")
    async def overview_fragment(request: Request) -> Response:
        if await _signed_in(request) is None:
            raise HTTPException(401, "sign in")
        board = overview(_hub(request).board)
        html = templates.get_template("_overview.html").render(prefix=PREFIX, board=board)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    @r.get("/events")
    async def events(request: Request, deployment: str | None = None) -> Response:
        """Server-sent events: ``overview`` (the table, rendered) on every change, or
        for a deployment page ``deployment`` (its id) when one of its events arrives."""
        if await _signed_in(request) is None:
            raise HTTPException(401, "sign in")
        hub = _hub(request)

        def render() -> str:
            return templates.get_template("_overview.html").render(prefix=PREFIX, board=overview(hub.board))

        async def stream() -> AsyncIterator[dict[str, str]]:
            seq = hub.seq
            # the state now first: what changed between the page and this stream (or
            # while a reconnecting browser was away) is not missed
            if deployment is None:
                yield {"event": "overview", "data": render()}
            else:
                yield {"event": "deployment", "data": deployment}
            while True:
                now = await hub.wait(seq, within=15)
                if now is None:
                    return
                if now == seq:
                    yield {"event": "ping", "data": ""}
                    continue
                touched = hub.touched(seq)
                seq = now
                if deployment is None:
                    yield {"event": "overview", "data": render()}
                elif touched is None or deployment in touched:
                    yield {"event": "deployment", "data": deployment}

        return EventSourceResponse(stream(), headers={"Cache-Control": "no-store"}, ping=None)

    # -- one deployment ---------------------------------------------------------------------

    async def _deployment_context(request: Request, deployment_id: str) -> dict[str, Any] | None:
        log = _deps(request).log
        history = await log.read_stream(deployment_stream(deployment_id))
        state = await load_deployment(log, deployment_id)
        if state is None or state.plan is None:
            return None
        return {
            "d": state,
            "plan": state.plan,
            "timeline": timeline(history),
            "analysis": analysis(history),
            "deployment_id": deployment_id,
        }

    @r.get("/deployments/{deployment_id}")
    async def deployment_page(request: Request, deployment_id: str) -> Response:
        me = await _signed_in(request)
        if me is None:
            return _to_signin(request)
        ctx = await _deployment_context(request, deployment_id)
        if ctx is None:
            detail = f"no deployment {deployment_id}"
            return _page("error.html", request, 404, me=me, detail=detail, back=PREFIX)
        return _page("deployment.html", request, me=me, actions=ACTIONS, **ctx)

    @r.get("/deployments/{deployment_id}/live")
    async def deployment_fragment(request: Request, deployment_id: str) -> Response:
        me = await _signed_in(request)
        if me is None:
            raise HTTPException(401, "sign in")
        ctx = await _deployment_context(request, deployment_id)
        if ctx is None:
            raise HTTPException(404, f"no deployment {deployment_id}")
        html = templates.get_template("_deployment.html").render(
            prefix=PREFIX,
            me=me[1],
            csrf=me[0].csrf,
            csrf_field=CSRF_FIELD,
            operator=_is_operator(request, me[1]),
            actions=ACTIONS,
            **ctx,
        )
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    @r.post("/deployments/{deployment_id}/{action}")
    async def operate(request: Request, deployment_id: str, action: str) -> Response:
        form = await _form(request)
        me = await _guard(request, form)
        back = f"{PREFIX}/deployments/{quote(deployment_id)}"
        body: dict[str, Any] = {"comment": form.get("comment", "")}
        if action in ("approve", "deny"):
            back = _local(form.get("back")) if form.get("back") else f"{PREFIX}/approvals"
            for key in ("role", "plan_hash", "digest"):
                if form.get(key):
                    body[key] = form[key]
        elif action not in ACTIONS:
            raise HTTPException(404, f"no action {action}")
        answer = await _command(request, me[0], f"/deployments/{quote(deployment_id)}/{action}", body)
        return _answered(request, me, answer, back, f"{action}: sent for {deployment_id}")

    @r.post("/services/{service}/environments/{environment}/rollback")
    async def rollback(request: Request, service: str, environment: str) -> Response:
        form = await _form(request)
        me = await _guard(request, form)
        back = _local(form.get("back"))
        body: dict[str, Any] = {"comment": form.get("comment", "")}
        if form.get("to_version"):
            body["to_version"] = form["to_version"]
        path = f"/services/{quote(service)}/environments/{quote(environment)}/rollback"
        answer = await _command(request, me[0], path, body)
        return _answered(request, me, answer, back, f"rollback: sent for {service} in {environment}")

    # -- approvals ----------------------------------------------------------------------

    @r.get("/approvals")
    async def approvals(request: Request) -> Response:
        me = await _signed_in(request)
        if me is None:
            return _to_signin(request)
        who = me[1]
        log = _deps(request).log
        report = await deployment_status(log)
        mine: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for pending in report.pending_approvals():
            request_ = pending.approval or {}
            roles = list(request_.get("roles") or [])
            named = list(request_.get("approvers") or [])
            acting = [role for role in roles if who.holds(role)]
            allowed = (not roles and not named) or bool(acting) or who.name in named
            barred = [*(request_.get("excluded") or []), *(request_.get("counted") or [])]
            blocked = who.name in barred
            state = await load_deployment(log, pending.deployment_id)
            env = report.get(pending.service, pending.environment)
            serving = env.serving.version if env and env.serving else None
            earlier = []
            for other in report.environments:
                if other.service != pending.service or other.environment == pending.environment:
                    continue
                dep = f"{pending.service}.{other.environment}.{pending.release_id}"
                history = await log.read_stream(deployment_stream(dep))
                if not history:
                    continue
                view = analysis(history)
                status = (await load_deployment(log, dep)) if history else None
                earlier.append(
                    {
                        "environment": other.environment,
                        "deployment_id": dep,
                        "status": status.status.value if status else "?",
                        "verifications": [(a.step_index, a.outcome) for a in view.runs],
                    }
                )
            item = {
                "p": pending,
                "request": request_,
                "plan": state.plan if state else None,
                "serving": serving,
                "earlier": earlier,
                "acting": acting,
                "can": allowed and not blocked,
                "blocked": blocked,
            }
            (mine if item["can"] else others).append(item)
        return _page("approvals.html", request, me=me, mine=mine, others=others)

    # -- audit ----------------------------------------------------------------------------

    @r.get("/audit")
    async def audit(
        request: Request,
        stream: str = "",
        type: str = "",
        actor: str = "",
        since: str = "",
        deployment: str = "",
        at: str = "",
        verify: str = "1",
    ) -> Response:
        me = await _signed_in(request)
        if me is None:
            return _to_signin(request)
        log = _deps(request).log
        chain = await log.verify() if verify != "0" else None
        rows: deque[dict[str, Any]] = deque(maxlen=AUDIT_LIMIT)
        matched = 0
        async for raw in log.scan(stream_prefix=stream or None, since=_parse_time(since)):
            if type and type not in raw.event_type:
                continue
            body: dict[str, Any] = json.loads(raw.body)
            if actor and actor != body.get("actor"):
                continue
            matched += 1
            rows.append(
                {
                    "position": raw.position,
                    "at": raw.recorded_at.isoformat(timespec="milliseconds"),
                    "stream": raw.stream_id,
                    "type": raw.event_type,
                    "actor": body.get("actor"),
                    "subject": body.get("subject"),
                    "data": body.get("data") or {},
                }
            )
        view = None
        when = _parse_time(at)
        if deployment:
            found = await audit_show(log, deployment, when)
            view = found.to_dict() if found else {"missing": True}
        return _page(
            "audit.html",
            request,
            me=me,
            chain=chain,
            rows=list(reversed(rows)),
            matched=matched,
            limit=AUDIT_LIMIT,
            f={
                "stream": stream,
                "type": type,
                "actor": actor,
                "since": since,
                "deployment": deployment,
                "at": at,
            },
            view=view,
        )

    # -- delivery metrics -----------------------------------------------------------------

    @r.get("/metrics")
    async def metrics(request: Request, service: str = "") -> Response:
        me = await _signed_in(request)
        if me is None:
            return _to_signin(request)
        rows = await dora(_deps(request).log, service=service or None)
        labels = [f"{row.service} / {row.environment}" for row in rows]

        def chart(title: str, values: list[float | None], **kw: Any) -> str:
            return bar_chart(title, list(zip(labels, values, strict=True)), **kw)

        def duration(seconds: float) -> str:
            return format_duration(seconds)

        def rate(share: float | None) -> float | None:
            return None if share is None else 100 * share

        charts = [
            chart(
                "deployment frequency",
                [r.frequency_per_day for r in rows],
                unit=" /day",
                fmt=lambda v: f"{v:.1f}",
            ),
            chart("lead time for changes (median)", [r.lead_time_median_s for r in rows], fmt=duration),
            chart(
                "change failure rate",
                [rate(r.change_failure_rate) for r in rows],
                unit="%",
                fmt=lambda v: f"{v:.0f}",
            ),
            chart("time to restore (median)", [r.time_to_restore_median_s for r in rows], fmt=duration),
        ]
        return _page("metrics.html", request, me=me, rows=rows, charts=charts, service=service)

    return r


def mount(app: FastAPI, hub: Hub, sessions: Sessions | None = None) -> bool:
    """Serve the dashboard from ``app`` (the command API's), fed by ``hub``. False,
    with the reason logged, when its templates were not installed: the API serves on."""
    missing = [d for d in ("templates", "static") if not (HERE / d).is_dir()]
    if missing:
        logger.error(
            "the dashboard is off: its %s directories are not installed beside %s "
            "(the package data must include *.html, *.js and *.css)",
            " and ".join(missing),
            HERE,
        )
        return False
    app.state.dashboard_hub = hub
    app.state.dashboard_sessions = sessions or Sessions()
    app.include_router(router())
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    return True
