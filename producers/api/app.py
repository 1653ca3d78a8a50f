"""The command API: what a person's approve, deny, promote, pause, resume, abort,
schedule and rollback put on ``shiplog.commands``, and what they read first.

Every command is authenticated (``producers.api.auth``); the actor on the event is
the authenticated principal — never a name from the request body — and the API
signs each command it publishes (``events.signature``), so a command written
straight to the topic is refused by the consumers. A command is answered 202 with
its event id once the broker has it: publishing says it was given; the consumers
decide what it does (and the log records it).

OpenAPI: ``/openapi.json``, ``/docs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from adapters.identity import Principal
from consumers.deployment import DeploymentState, Status
from events.approval import ApprovalDenied, ApprovalGranted
from events.base import EventData
from events.command import Abort, Drill, Pause, Promote, Resume, Rollback, Schedule
from events.errors import AdapterUnavailable, InvalidInput, ShiplogError
from producers.api.auth import SOURCE, Authenticated, Operator, client_address, require_role
from producers.api.deps import ApiDeps
from producers.commands import command_event
from shiplog import __version__
from shiplog.status import deployment_status, find_deployment, load_deployment

#: statuses in which an approval or denial can still matter
BEFORE_APPROVAL = frozenset({Status.NEW, Status.PLANNED, Status.AWAITING_APPROVAL})


_DRILL_ENDS = frozenset({"completed", "failed", "refused"})


class CommandBody(BaseModel):
    comment: str = Field(default="", max_length=4000, description="why; recorded with the command")


class ApprovalBody(CommandBody):
    role: str | None = Field(
        default=None,
        max_length=200,
        description="the role you act in (must be one you hold and one the level names)",
    )
    level: str | None = Field(
        default=None, max_length=200, description="the level you mean (default: the one open now)"
    )
    plan_hash: str | None = Field(
        default=None,
        max_length=200,
        description="the plan you saw: the answer is refused if the plan changed since",
    )
    digest: str | None = Field(default=None, max_length=200, description="the artifact digest you saw")


class ScheduleBody(CommandBody):
    not_before: AwareDatetime = Field(description="hold the deployment until then (RFC 3339, with offset)")


class RollbackBody(CommandBody):
    to_version: str | None = Field(
        default=None, max_length=200, description="the version to restore: must be the one the snapshot holds"
    )


class DrillBody(CommandBody):
    not_before: AwareDatetime | None = Field(
        default=None, description="run the drill then, through the timers (default: now)"
    )


class Accepted(BaseModel):
    """A command published on shiplog.commands."""

    id: str = Field(description="the command event's id")
    type: str
    subject: str
    actor: str


def _error(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


async def _deployment(deps: ApiDeps, deployment_id: str, *, approval: bool) -> DeploymentState:
    """The deployment a command names, if a command on it can still matter."""
    state = await load_deployment(deps.log, deployment_id)
    if state is None or state.plan is None:
        raise _error(404, f"no deployment {deployment_id} in the log")
    if state.terminal:
        raise _error(409, f"deployment {deployment_id} already ended: {state.status.value}")
    if approval and state.status not in BEFORE_APPROVAL:
        raise _error(409, f"deployment {deployment_id} is past approval (status {state.status.value})")
    return state


async def _publish(
    deps: ApiDeps, data: EventData, who: Principal, *, subject: str, correlationid: str | None
) -> Accepted:
    event = command_event(data, actor=who.name, subject=subject, correlationid=correlationid, source=SOURCE)
    event = deps.signer(event)
    await deps.publish(event)
    return Accepted(id=event.id, type=event.type, subject=event.subject, actor=who.name)


def _detail(state: DeploymentState) -> dict[str, Any]:
    assert state.plan is not None
    plan = state.plan
    request = state.approval.request if state.approval else None
    return {
        "deployment_id": plan.deployment_id,
        "release_id": plan.release_id,
        "service": plan.service,
        "environment": plan.environment,
        "version": plan.version,
        "artifact": plan.artifact,
        "digest": plan.digest,
        "plan_hash": plan.plan_hash,
        "status": state.status.value,
        "terminal": state.terminal,
        "approvers": list(state.approvers),
        "approval_request": request.model_dump(mode="json") if request else None,
        "paused_reason": state.paused_reason,
        "not_before": state.not_before.isoformat() if state.not_before else None,
        "previous_version": state.previous_version,
        "current_step": state.current,
        "plan": plan.model_dump(mode="json"),
    }


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(
        title="shiplog command API",
        version=__version__,
        description="Approve, deny, promote, pause, resume, abort, schedule and roll back "
        "deployments; read what awaits approval and how deployments stand. Every endpoint "
        "but /healthz needs a bearer token; the actor recorded is the token's principal.",
    )
    app.state.deps = deps

    @app.exception_handler(AdapterUnavailable)
    async def _unavailable(request: Request, exc: AdapterUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ShiplogError)
    async def _refused(request: Request, exc: ShiplogError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness (no authentication)."""
        return {"status": "ok"}

    # -- approvals --------------------------------------------------------------------

    async def _answer(
        request: Request,
        model: type[ApprovalGranted | ApprovalDenied],
        deployment_id: str,
        body: ApprovalBody,
        who: Principal,
    ) -> Accepted:
        state = await _deployment(deps, deployment_id, approval=True)
        if body.role is not None:
            await require_role(request, who, body.role)
        data = model(
            deployment_id=deployment_id,
            comment=body.comment,
            role=body.role,
            roles=sorted(who.roles),
            level=body.level,
            plan_hash=body.plan_hash,
            digest=body.digest,
            client=client_address(request, deps.trust_proxy),
        )
        assert state.plan is not None
        return await _publish(deps, data, who, subject=deployment_id, correlationid=state.plan.release_id)

    @app.post("/deployments/{deployment_id}/approve", status_code=202, tags=["approvals"])
    async def approve(
        request: Request, deployment_id: str, body: ApprovalBody, who: Authenticated
    ) -> Accepted:
        """Approve a deployment awaiting approval, as the authenticated principal."""
        return await _answer(request, ApprovalGranted, deployment_id, body, who)

    @app.post("/deployments/{deployment_id}/deny", status_code=202, tags=["approvals"])
    async def deny(request: Request, deployment_id: str, body: ApprovalBody, who: Authenticated) -> Accepted:
        """Deny a deployment awaiting approval."""
        return await _answer(request, ApprovalDenied, deployment_id, body, who)

    @app.get("/approvals/pending", tags=["approvals"])
    async def pending(who: Authenticated) -> list[dict[str, Any]]:
        """Deployments awaiting approval."""
        return [d.to_dict() for d in (await deployment_status(deps.log)).pending_approvals()]

    # -- operating deployments -----------------------------------------------------------

    async def _operate(deployment_id: str, data: EventData, who: Principal) -> Accepted:
        state = await _deployment(deps, deployment_id, approval=False)
        assert state.plan is not None
        return await _publish(deps, data, who, subject=deployment_id, correlationid=state.plan.release_id)

    @app.post("/deployments/{deployment_id}/promote", status_code=202, tags=["deployments"])
    async def promote(deployment_id: str, body: CommandBody, who: Operator) -> Accepted:
        """Skip the current pause (an indefinite one waits for exactly this)."""
        return await _operate(deployment_id, Promote(deployment_id=deployment_id, comment=body.comment), who)

    @app.post("/deployments/{deployment_id}/pause", status_code=202, tags=["deployments"])
    async def pause(deployment_id: str, body: CommandBody, who: Operator) -> Accepted:
        """Pause a deployment before its next step."""
        return await _operate(deployment_id, Pause(deployment_id=deployment_id, comment=body.comment), who)

    @app.post("/deployments/{deployment_id}/resume", status_code=202, tags=["deployments"])
    async def resume(deployment_id: str, body: CommandBody, who: Operator) -> Accepted:
        """Resume a paused deployment."""
        return await _operate(deployment_id, Resume(deployment_id=deployment_id, comment=body.comment), who)

    @app.post("/deployments/{deployment_id}/abort", status_code=202, tags=["deployments"])
    async def abort(deployment_id: str, body: CommandBody, who: Operator) -> Accepted:
        """Stop a deployment and roll it back."""
        return await _operate(deployment_id, Abort(deployment_id=deployment_id, comment=body.comment), who)

    @app.post("/deployments/{deployment_id}/schedule", status_code=202, tags=["deployments"])
    async def schedule(deployment_id: str, body: ScheduleBody, who: Operator) -> Accepted:
        """Hold a deployment that has not started until ``not_before``."""
        data = Schedule(deployment_id=deployment_id, comment=body.comment, not_before=body.not_before)
        return await _operate(deployment_id, data, who)

    @app.post(
        "/services/{service}/environments/{environment}/rollback", status_code=202, tags=["deployments"]
    )
    async def rollback(service: str, environment: str, body: RollbackBody, who: Operator) -> Accepted:
        """Roll a service back in an environment: to the snapshot taken before its last
        deployment (``to_version``, if given, must be the version that snapshot holds)."""
        report = await deployment_status(deps.log, service)
        if report.get(service, environment) is None:
            known = ", ".join(sorted({e.environment for e in report.environments})) or "none"
            raise _error(
                404,
                f"no deployment of {service} in {environment} in the log: nothing to roll back"
                f" (environments of {service}: {known})",
            )
        if body.to_version is not None:
            found = await find_deployment(deps.log, service, environment)
            state = await load_deployment(deps.log, found) if found else None
            restores = state.previous_version if state else None
            if restores != body.to_version:
                raise _error(
                    422,
                    f"rolling back {service} in {environment} restores the snapshot taken before its "
                    f"last deployment, which ran {restores or 'nothing'}, not {body.to_version}; to run "
                    f"{body.to_version}, publish its build again",
                )
        data = Rollback(
            service=service, environment=environment, to_version=body.to_version, comment=body.comment
        )
        return await _publish(deps, data, who, subject=f"{service}.{environment}", correlationid=None)

    @app.post("/services/{service}/environments/{environment}/drill", status_code=202, tags=["drills"])
    async def drill(service: str, environment: str, body: DrillBody, who: Operator) -> Accepted:
        """Rehearse a rollback: back to the release before the one that runs, verified,
        and forward again, verified; each step timed (``GET /drills/{id}``)."""
        report = await deployment_status(deps.log, service)
        if report.get(service, environment) is None:
            raise _error(404, f"no deployment of {service} in {environment} in the log: nothing to drill")
        data = Drill(
            service=service, environment=environment, not_before=body.not_before, comment=body.comment
        )
        return await _publish(deps, data, who, subject=f"{service}.{environment}", correlationid=None)

    @app.get("/drills/{drill_id}", tags=["drills"])
    async def drill_report(drill_id: str, who: Authenticated) -> dict[str, Any]:
        """A drill's events so far, and whether it ended (``outcome``)."""
        history = await deps.log.read_stream(f"drill-{drill_id}")
        events = [r.event for r in history if r.event.type_name.startswith("shiplog.drill.")]
        if not events and not history:
            raise _error(404, f"no drill {drill_id} in the log (yet)")
        outcome = next(
            (e.type_name.rsplit(".", 1)[1] for e in events if e.type_name.rsplit(".", 1)[1] in _DRILL_ENDS),
            None,
        )
        return {
            "drill_id": drill_id,
            "outcome": outcome,
            "events": [{"type": e.type_name, "time": e.time.isoformat(), "data": e.data} for e in events],
        }

    # -- reading --------------------------------------------------------------------------

    @app.get("/deployments", tags=["deployments"])
    async def deployments(who: Authenticated, service: str | None = None) -> dict[str, Any]:
        """What serves in each environment, and what is in progress (of one service or all)."""
        return (await deployment_status(deps.log, service)).to_dict()

    @app.get("/deployments/{deployment_id}", tags=["deployments"])
    async def deployment(deployment_id: str, who: Authenticated) -> dict[str, Any]:
        """One deployment: its plan, status, approvals so far, current step."""
        state = await load_deployment(deps.log, deployment_id)
        if state is None:
            raise _error(404, f"no deployment {deployment_id} in the log")
        return _detail(state)

    @app.get("/releases/{release_id}", tags=["releases"])
    async def release(release_id: str, who: Authenticated) -> dict[str, Any]:
        """A multi-service release: each service's status in each environment, the
        dependency waves, and how the release concluded in each environment."""
        from shiplog.releases import release_status

        found = await release_status(deps.log, release_id)
        if found is None:
            raise _error(404, f"no multi-service release {release_id} in the log")
        return found

    @app.get("/services/{service}/environments/{environment}", tags=["deployments"])
    async def environment(service: str, environment: str, who: Authenticated) -> dict[str, Any]:
        """The deployment a command on SERVICE in ENVIRONMENT means: the one executing,
        else the latest not ended, else the latest."""
        found = await find_deployment(deps.log, service, environment)
        if found is None:
            raise _error(404, f"no deployment of {service} in {environment} in the log")
        return {"service": service, "environment": environment, "deployment_id": found}

    return app
