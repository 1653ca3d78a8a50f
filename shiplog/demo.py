"""``shiplog demo``: the embedded system, and a scenario played against it.

1.0.0 goes dev -> staging -> production (rolling, blue-green, then a canary at 20%
and 50% with analysis, approved by a named release manager through the command API,
with an API token that names her and holds the roles the production gate asks
for); then 1.1.0, which the demo pipeline marks as bad, fails its canary analysis
in production and is rolled back by itself. Every event is printed as it lands in the log; at the end, HTTP
requests show which version really serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from adapters.eventlog import PostgresEventLog
from adapters.identity.tokens import PostgresTokenStore
from consumers.deployment import DeploymentState, Status, fold
from consumers.planning.loader import load_pipelines
from events.deployment import deployment_id, deployment_stream
from producers.build import publish_build
from shiplog.components import ALL
from shiplog.runner import Running, run_components
from shiplog.settings import Settings
from shiplog.status import deployment_status

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "demo"
SERVICE = "sample"
APPROVER = "alice"
WAIT_S = 90.0
STYLE = {
    "succeeded": "bold green",
    "rolled_back": "bold red",
    "failed": "bold red",
    "rejected": "red",
    "denied": "red",
    "requested": "yellow",
    "paused": "yellow",
    "passed": "green",
}


@dataclass
class Outcome:
    good_served: str | None = None
    bad_status: str | None = None
    final_served: Counter[str] | None = None

    @property
    def ok(self) -> bool:
        return (
            self.good_served == "1.0.0"
            and self.bad_status == Status.ROLLED_BACK
            and self.final_served is not None
            and set(self.final_served) == {"1.0.0"}
        )


def build(version: str) -> dict[str, Any]:
    return {
        "service": SERVICE,
        "version": version,
        "artifact": f"registry.example.com/{SERVICE}:{version}",
        "digest": "sha256:" + (version.replace(".", "") * 64)[:64],
        "commit": "0" * 40,
        "branch": "main",
        "author": "bob",
        "tests": {"passed": 120, "failed": 0, "coverage": 91.0},
        "security": {"critical": 0, "high": 0},
    }


def describe(event: dict[str, Any]) -> str:
    data = event.get("data", {})
    for key in ("rule", "reason", "why"):
        if data.get(key):
            return str(data[key])[:110]
    step = data.get("step")
    if step:
        return (
            f"step {data.get('index')}: {step.get('kind')}"
            + (f" {step['weight']}%" if step.get("weight") is not None else "")
            + ("" if data.get("ok", True) else f" FAILED: {data.get('error')}")
        )
    if "version" in data and "service" in data:
        return f"{data['service']} {data['version']}"
    return ""


async def watch(log: PostgresEventLog, console: Console) -> None:
    """Print every event as it lands in the log."""
    async for row in log.tail(after=0):
        event = json.loads(row.body)
        kind = event["type"].removeprefix("shiplog.").rsplit(".v", 1)[0]
        env = event["subject"].split(".")[1] if event["subject"].count(".") >= 2 else ""
        style = next((s for k, s in STYLE.items() if kind.endswith(k)), "")
        when = f"{row.recorded_at:%H:%M:%S.%f}"[:-3]
        line = Text.assemble((when, "dim"), f" {env:<10} ", (f"{kind:<24}", style), f" {describe(event)}")
        if event.get("actor"):
            line.append(f" by {event['actor']}", "cyan")
        console.print(line, highlight=False)


async def until(
    log: PostgresEventLog, deployment: str, done: Callable[[DeploymentState], bool], within: float = WAIT_S
) -> DeploymentState:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        state = fold(r.event for r in await log.read_stream(deployment_stream(deployment)))
        if done(state):
            return state
        if loop.time() > deadline:
            raise TimeoutError(f"{deployment} is still {state.status} after {within:.0f}s")
        await asyncio.sleep(0.1)


async def serving(endpoint: str, requests: int = 50) -> Counter[str]:
    """Which versions answer real requests through the environment's endpoint."""
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=2.0) as client:
        for _ in range(requests):
            response = await client.get(endpoint + "/")
            seen[response.headers.get("x-shiplog-version", "?")] += 1
    return seen


def production_roles(config: Path = DEMO_CONFIG) -> list[str]:
    """The roles the demo pipeline's production gate asks approvers for."""
    [environment] = [e for e in load_pipelines(config)[SERVICE].environments if e.name == "production"]
    manual = environment.gate.manual
    return sorted({role for level in (manual.levels if manual else []) for role in level.roles})


@dataclass
class Approver:
    """The demo's release manager: her API token, and the role she approves in."""

    token: str = field(repr=False)
    role: str | None


async def approver(log: PostgresEventLog) -> Approver:
    roles = production_roles()
    _, token = await PostgresTokenStore(log).create(
        APPROVER, roles, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    return Approver(token, roles[0] if roles else None)


async def release(
    settings: Settings, running: Running, console: Console, version: str, who: Approver
) -> tuple[str, DeploymentState]:
    assert settings.kafka_bootstrap_servers and running.api_url
    log = running.log
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topic_prefix
    event = await publish_build(bootstrap, build(version), source="ci/demo/sample", topic_prefix=prefix)
    production = deployment_id(SERVICE, "production", event.id)
    await until(log, production, lambda s: s.status in (Status.AWAITING_APPROVAL, *terminal_statuses()))
    role = f" --role {who.role}" if who.role else ""
    console.print(
        f"\n[bold]A release manager approves production[/] (what {APPROVER} types, her API token "
        f"in SHIPLOG_TOKEN):\n"
        f"  shiplog approve {production} --comment 'canary plan looks good'{role}\n"
    )
    async with httpx.AsyncClient(
        base_url=running.api_url, headers={"Authorization": f"Bearer {who.token}"}, timeout=30
    ) as api:
        answer = await api.post(
            f"/deployments/{production}/approve",
            json={"comment": "canary plan looks good", "role": who.role},
        )
    if answer.status_code != 202:
        raise RuntimeError(f"the API refused the approval: {answer.status_code} {answer.text}")
    return production, await until(log, production, lambda s: s.terminal)


def terminal_statuses() -> tuple[Status, ...]:
    return (Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.REJECTED, Status.DENIED)


async def play(settings: Settings, running: Running, console: Console) -> Outcome:
    log = running.log
    outcome = Outcome()
    watcher = asyncio.create_task(watch(log, console))
    try:
        console.rule("[bold]1.0.0 walks dev -> staging -> production")
        who = await approver(log)
        _, state = await release(settings, running, console, "1.0.0", who)
        endpoint = await _endpoint(running, state)
        served = await serving(endpoint)
        outcome.good_served = served.most_common(1)[0][0] if served else None
        await asyncio.sleep(0.3)
        console.print(f"\nproduction ({endpoint}) serves: {dict(served)}\n")
        console.rule("[bold]1.1.0 is bad: its canary fails analysis and rolls back")
        _, state = await release(settings, running, console, "1.1.0", who)
        outcome.bad_status = state.status
        outcome.final_served = await serving(endpoint)
        await asyncio.sleep(0.3)
        console.print(f"\nproduction ({endpoint}) serves: {dict(outcome.final_served)}\n")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    report = await deployment_status(log, SERVICE)
    table = Table(title="where each version runs now")
    for column in ("environment", "serving", "via"):
        table.add_column(column)
    for env in report.environments:
        serving_now = env.serving
        table.add_row(
            env.environment,
            serving_now.version or "-" if serving_now else "-",
            serving_now.via if serving_now else "",
        )
    console.print(table)
    return outcome


async def _endpoint(running: Running, production: DeploymentState) -> str:
    assert running.ports is not None and production.plan is not None
    plan = production.plan
    target = running.ports.targets(plan.target.type, plan.target.settings)
    status = await target.status(plan.service, plan.environment, plan.target.settings)
    assert status.endpoint, "production has no endpoint"
    return status.endpoint.rstrip("/")


async def run_demo(settings: Settings, stop: asyncio.Event, console: Console) -> Outcome:
    # the demo's API is its own: any free port, never one a `shiplog dev` holds
    settings = settings.model_copy(update={"api_port": 0})
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    system: asyncio.Future[None] = asyncio.ensure_future(
        run_components(settings, ALL, stop, on_ready=ready.set_result, stop_targets=True)
    )
    waiting: list[asyncio.Future[Any]] = [system, ready]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if system.done():
        system.result()
    try:
        return await play(settings, ready.result(), console)
    finally:
        stop.set()
        await system
