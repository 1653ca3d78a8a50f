"""The AWS targets and CloudWatch against moto in server mode (tests/motoserver.py).

What moto pretends, and how the tests drive it:

- CloudWatch never evaluates an alarm from data: the tests set alarm states with
  ``set_alarm_state``, as an alarm on the canary's errors would fire.
- Lambda code is never run (no Docker): versions, aliases and weighted routing are
  real API state, which is all the target changes and all the tests observe.
- moto never fails or throttles on its own: ``FaultyProxy`` below, an aiohttp proxy
  in front of moto, answers chosen requests with HTTP 429 ``ThrottlingException``
  or HTTP 500 for a number of times, then lets them through.

Verification runs as the consumer runs it — ``VERIFICATION.run_gather`` then
``run_decide`` on a folded deployment — with the real ``LambdaTarget`` as the
targets port and CloudWatch at moto's endpoint; no broker or database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel

from adapters.metrics.cloudwatch import CloudWatchMetrics, MetricQuery
from adapters.targets import Release, Step, StepResult
from adapters.targets.aws import EcsTarget
from adapters.targets.aws.api import STEP_TAG_PREFIX, encode_result, recorded, stale_tags, step_tag
from adapters.targets.aws.config import AwsTargetConfig
from adapters.targets.serverless import LambdaTarget, canary_steps
from consumers.contract import Ports
from consumers.deployment.state import DeploymentState, fold
from consumers.planning.pipeline import CanaryStep
from consumers.planning.strategy import canary_plan
from consumers.rollback.restore import healthy
from consumers.rollback.restore import restore as rollback_restore
from consumers.verification import VERIFICATION
from events.deployment import DeploymentPlanned, PlannedStep, StrategyPlan, TargetRef
from events.envelope import CloudEvent
from events.errors import InvalidInput
from events.execution import StepStarted
from events.registry import new_event
from events.rollback import RollbackStarted
from events.verification import VerificationFailed, VerificationPassed
from tests.motoserver import (  # noqa: F401 - fixtures
    ACCESS_KEY,
    SECRET_KEY,
    MotoServer,
    create_function,
    lambda_zip,
    moto_server,
    moto_session,
)

pytestmark = pytest.mark.timeout(60)

SERVICE, ENV = "checkout", "production"
ALARM = "checkout-canary-errors"
DEPLOYMENT = f"{SERVICE}.{ENV}.r-2"
PLAN_STEPS = [
    PlannedStep(kind="set_weight", weight=10),
    PlannedStep(kind="analysis"),
    PlannedStep(kind="promote"),
]


# -- a proxy in front of moto that fails on purpose -----------------------------------


@dataclass
class Fault:
    method: str
    path_part: str
    status: int
    times: int
    seen: int = 0


@dataclass
class FaultyProxy:
    """Forwards every request to moto, except that a request matching a fault gets
    the fault's answer, ``times`` times."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    #: X-Amz-Target suffix -> a change to moto's JSON answer
    rewrites: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    url: str = ""

    def fail(self, method: str, path_part: str, status: int, times: int) -> Fault:
        fault = Fault(method, path_part, status, times)
        self.faults.append(fault)
        return fault

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        for fault in self.faults:
            if request.method == fault.method and fault.path_part in request.path_qs:
                fault.seen += 1
                if fault.seen <= fault.times:
                    return self._fault(fault.status)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            data = await upstream.read()
            operation = request.headers.get("X-Amz-Target", "")
            for suffix, change in self.rewrites.items():
                if operation.endswith(suffix) and upstream.status == 200:
                    data = json.dumps(change(json.loads(data))).encode()
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")
            }
            return web.Response(status=upstream.status, body=data, headers=passed)

    @staticmethod
    def _fault(status: int) -> web.Response:
        if status == 429:
            return web.json_response(
                {"message": "Rate exceeded"}, status=429, headers={"x-amzn-ErrorType": "ThrottlingException"}
            )
        return web.json_response(
            {"message": "We encountered an internal error"},
            status=status,
            headers={"x-amzn-ErrorType": "ServiceException"},
        )


@pytest.fixture
async def proxy(moto_server: MotoServer) -> AsyncIterator[FaultyProxy]:
    faulty = FaultyProxy(moto_server.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", faulty.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    faulty.url = f"http://{host}:{port}"
    try:
        yield faulty
    finally:
        await runner.cleanup()


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def function(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # verification reads CloudWatch with the SDK's standard chain: here, the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    create_function(moto_server, SERVICE)
    for n in (1, 2):
        (tmp_path / f"{n}.zip").write_bytes(lambda_zip(f"{n}.0.0"))
    return tmp_path


def lambda_target(server: MotoServer, url: str | None = None, **extra: Any) -> LambdaTarget:
    return LambdaTarget(AwsTargetConfig.model_validate(server.target_config(url, **extra)))


def release(artifacts: Path, n: int) -> Release:
    return Release(
        service=SERVICE,
        environment=ENV,
        version=f"{n}.0.0",
        artifact=str(artifacts / f"{n}.zip"),
        config={"DB_PASSWORD": "from-a-secret-ref"},
    )


def step(artifacts: Path, n: int, kind: str, weight: int | None = None, step_id: str | None = None) -> Step:
    return Step(
        step_id=step_id or f"{kind}-{weight}",
        deployment_id=f"d-{n}",
        kind=kind,  # type: ignore[arg-type]
        release=release(artifacts, n),
        weight=weight,
    )


def alias(server: MotoServer) -> tuple[str, dict[str, float]]:
    got = server.client("lambda").get_alias(FunctionName=SERVICE, Name=ENV)
    return got["FunctionVersion"], (got.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def analysis(server: MotoServer, **extra: Any) -> dict[str, Any]:
    """An analysis with no health check (a Lambda version has no instance URL), the
    canary's CloudWatch alarm as a rollback trigger and its Errors metric as a check."""
    return {
        "health": None,
        "interval_s": 0.05,
        "count": 2,
        "cloudwatch": {"region": "eu-west-1", "endpoint_url": server.url},
        "alarms": [ALARM],
        "cloudwatch_queries": [
            {
                "name": "canary-errors",
                "query": {
                    "namespace": "AWS/Lambda",
                    "metric": "Errors",
                    "dimensions": {"FunctionName": "{{service}}", "Resource": "{{service}}:{{environment}}"},
                    "stat": "Sum",
                    "period_s": 60,
                },
                "max": 0,
            }
        ],
        **extra,
    }


def put_alarm_and_metric(server: MotoServer) -> None:
    cw = server.client("cloudwatch")
    dimensions = [
        {"Name": "FunctionName", "Value": SERVICE},
        {"Name": "Resource", "Value": f"{SERVICE}:{ENV}"},
    ]
    cw.put_metric_alarm(
        AlarmName=ALARM,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=dimensions,
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="no errors")
    cw.put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {
                "MetricName": "Errors",
                "Dimensions": dimensions,
                "Value": 0.0,
                "Timestamp": datetime.now(UTC) - timedelta(seconds=5),
            }
        ],
    )


def emit(data: Any) -> CloudEvent:
    return new_event(data, source="shiplog/execution", subject=DEPLOYMENT, correlationid="r-2")


def lambda_plan(settings: dict[str, Any], analysis: dict[str, Any]) -> DeploymentPlanned:
    """2.0.0 of the function as a canary of PLAN_STEPS, as planning records it."""
    return DeploymentPlanned(
        deployment_id=DEPLOYMENT,
        release_id="r-2",
        service=SERVICE,
        version="2.0.0",
        artifact="2.zip",
        environment=ENV,
        stage=1,
        strategy=StrategyPlan(type="canary", reason="configured", steps=PLAN_STEPS),
        target=TargetRef(type="lambda", settings=settings),
        analysis=analysis,
        plan_hash="h",
    )


async def verify_analysis(target: LambdaTarget, analysis_policy: dict[str, Any]) -> CloudEvent:
    """Verification of the plan's analysis step (index 1), as the consumer runs it."""
    plan = lambda_plan({}, analysis_policy)
    trigger = emit(StepStarted(deployment_id=DEPLOYMENT, index=1, step_id="s1", step=PLAN_STEPS[1]))
    state: DeploymentState = fold([emit(plan), trigger])
    facts = await VERIFICATION.run_gather(Ports(targets=lambda type_, settings: target), state, trigger)
    [verdict] = VERIFICATION.run_decide(state, trigger, datetime.now(UTC), **facts)
    return verdict


# -- Lambda canary with an analysis between ---------------------------------------------


async def test_lambda_canary_shifts_10_then_100_with_a_passing_analysis_between(
    moto_server: MotoServer,
    function: Path,
) -> None:
    put_alarm_and_metric(moto_server)
    target = lambda_target(moto_server)
    assert (await target.apply(step(function, 1, "rolling"))).ok
    assert alias(moto_server) == ("1", {})

    canary = await target.apply(step(function, 2, "set_weight", 10))
    assert canary.ok, canary.error
    assert alias(moto_server) == ("1", {"2": 0.1})
    status = await target.status(SERVICE, ENV)
    assert [(t.version, t.role, t.weight) for t in status.tracks] == [
        ("1.0.0", "stable", 90),
        ("2.0.0", "canary", 10),
    ]

    verdict = await verify_analysis(target, analysis(moto_server))
    assert verdict.type_name == VerificationPassed.TYPE, verdict.data["measurements"]
    measured = {m["metric"]: m["outcome"] for m in verdict.data["measurements"]}
    assert measured == {"target": "Successful", "alarms": "Successful", "canary-errors": "Successful"}

    promoted = await target.apply(step(function, 2, "promote"))
    assert promoted.ok, promoted.error
    assert alias(moto_server) == ("2", {})
    assert [(t.version, t.weight) for t in (await target.status(SERVICE, ENV)).tracks] == [("2.0.0", 100)]


async def test_an_alarm_in_alarm_mid_canary_fails_the_check_and_restore_points_the_alias_back(
    moto_server: MotoServer,
    function: Path,
) -> None:
    put_alarm_and_metric(moto_server)
    target = lambda_target(moto_server)
    assert (await target.apply(step(function, 1, "rolling"))).ok
    snapshot = await target.snapshot(SERVICE, ENV)
    assert snapshot.version == "1.0.0"
    assert (await target.apply(step(function, 2, "set_weight", 10))).ok

    # moto does not evaluate alarms: set it as an alarm on the canary's errors would fire
    moto_server.client("cloudwatch").set_alarm_state(
        AlarmName=ALARM, StateValue="ALARM", StateReason="Threshold Crossed: 3 errors"
    )
    verdict = await verify_analysis(target, analysis(moto_server))
    assert verdict.type_name == VerificationFailed.TYPE, verdict.data
    assert "alarms Failed" in verdict.data["reason"] and ALARM in verdict.data["reason"]

    restored = await target.restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    assert alias(moto_server) == ("1", {})
    assert [(t.version, t.weight) for t in (await target.status(SERVICE, ENV)).tracks] == [("1.0.0", 100)]


async def test_an_unknown_alarm_or_an_unreachable_cloudwatch_never_passes(moto_server: MotoServer) -> None:
    states = await CloudWatchMetrics.from_config(
        {
            "region": "eu-west-1",
            "endpoint_url": moto_server.url,
            "access_key_id": "AKIA",
            "secret_access_key": "x",
        }
    ).alarm_states(["no-such-alarm"])
    assert states.missing == ("no-such-alarm",) and states.error is None
    down = await CloudWatchMetrics.from_config(
        {
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:9",
            "max_attempts": 1,
            "timeout_s": 1,
            "access_key_id": "AKIA",
            "secret_access_key": "x",
        }
    ).alarm_states([ALARM])
    assert down.error is not None and "DescribeAlarms" in down.error

    from consumers.verification.alarms import assess_alarms

    assert assess_alarms(states).outcome == "Error"
    assert assess_alarms(down).outcome == "Error"


async def test_cloudwatch_metric_queries_read_the_latest_datapoint(moto_server: MotoServer) -> None:
    put_alarm_and_metric(moto_server)
    source = CloudWatchMetrics.from_config(
        {
            "region": "eu-west-1",
            "endpoint_url": moto_server.url,
            "access_key_id": "AKIA",
            "secret_access_key": "x",
        }
    )
    query = MetricQuery(
        namespace="AWS/Lambda",
        metric="Errors",
        dimensions={"FunctionName": SERVICE, "Resource": f"{SERVICE}:{ENV}"},
        stat="Sum",
    )
    result = await source.query(query.text())
    assert result.status == "ok" and result.value == 0.0, result
    empty = await source.query(query.model_copy(update={"metric": "Throttles"}).text())
    assert empty.status == "empty"


# -- retries, then the step's error ---------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500], ids=["throttled", "5xx"])
async def test_a_throttling_or_failing_api_is_retried_with_backoff(
    moto_server: MotoServer,
    function: Path,
    proxy: FaultyProxy,
    status: int,
) -> None:
    # two attempts in all keep botocore's backoff (up to 1 s, then 2 s...) short here
    target = lambda_target(moto_server, proxy.url, max_attempts=2)
    assert (await target.apply(step(function, 1, "rolling"))).ok
    fault = proxy.fail("PUT", f"/functions/{SERVICE}/aliases/{ENV}", status, times=1)

    result = await target.apply(step(function, 2, "set_weight", 10))

    assert result.ok, result.error
    assert fault.seen == 2  # a failure, retried after a backoff, then through
    assert alias(moto_server) == ("1", {"2": 0.1})


@pytest.mark.parametrize("status", [429, 500], ids=["throttled", "5xx"])
async def test_a_call_failing_past_its_retries_is_the_steps_error(
    moto_server: MotoServer,
    function: Path,
    proxy: FaultyProxy,
    status: int,
) -> None:
    target = lambda_target(moto_server, proxy.url, max_attempts=2)
    assert (await target.apply(step(function, 1, "rolling"))).ok
    snapshot = await target.snapshot(SERVICE, ENV)
    fault = proxy.fail("PUT", f"/functions/{SERVICE}/aliases/{ENV}", status, times=100)

    result = await target.apply(step(function, 2, "set_weight", 10))

    assert not result.ok and not result.already_applied, result
    assert fault.seen == 2, result.error
    code = "ThrottlingException" if status == 429 else "ServiceException"
    assert (
        result.error is not None and f"UpdateAlias: {code} (HTTP {status}) after 2 attempt(s)" in result.error
    )
    assert alias(moto_server) == ("1", {})  # nothing changed, and nothing recorded as applied
    # the alias is as the snapshot says: restoring it needs no alias update, and succeeds
    restored = await target.restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error


async def test_alarm_lookups_failing_past_their_retries_are_an_error_not_a_pass(
    moto_server: MotoServer,
    function: Path,
    proxy: FaultyProxy,
) -> None:
    put_alarm_and_metric(moto_server)
    target = lambda_target(moto_server)
    assert (await target.apply(step(function, 1, "rolling"))).ok
    assert (await target.apply(step(function, 2, "set_weight", 10))).ok
    proxy.fail("POST", "/", 500, times=1000)  # CloudWatch is all POST /

    policy = analysis(
        moto_server, cloudwatch={"region": "eu-west-1", "endpoint_url": proxy.url, "timeout_s": 2}
    )
    policy["cloudwatch_queries"] = []
    policy["consecutive_error_limit"] = 0
    policy["count"] = 1  # one lookup: 4 attempts with botocore's backoff between them
    verdict = await verify_analysis(target, policy)

    assert verdict.type_name == VerificationFailed.TYPE, verdict.data
    [alarms, *_] = [m for m in verdict.data["measurements"] if m["metric"] == "alarms"]
    assert alarms["outcome"] == "Error" and "DescribeAlarms" in alarms["error"]


# -- credentials -------------------------------------------------------------------------


async def test_credentials_never_appear_in_results_snapshots_events_or_logs(
    moto_server: MotoServer,
    function: Path,
    proxy: FaultyProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    put_alarm_and_metric(moto_server)
    target = lambda_target(moto_server, proxy.url, max_attempts=2)
    first = await target.apply(step(function, 1, "rolling"))
    snapshot = await target.snapshot(SERVICE, ENV)
    proxy.fail("PUT", "/aliases/", 500, times=2)
    failed = await target.apply(step(function, 2, "set_weight", 10))  # fails past its retries
    again = await target.apply(step(function, 2, "set_weight", 10, step_id="again"))
    assert not failed.ok and again.ok
    outputs: list[BaseModel | CloudEvent] = [first, snapshot, failed, again]
    outputs.append(await target.status(SERVICE, ENV))
    outputs.append(await target.restore(snapshot, step_id="restore"))
    outputs.append(await verify_analysis(target, analysis(moto_server)))

    texts = [o.model_dump_json() for o in outputs] + [repr(target.config), str(target.config)]
    assert "Authorization" in caplog.text  # botocore logged signed requests at DEBUG
    for text in [*texts, caplog.text]:
        assert SECRET_KEY not in text
    for text in texts:
        # the release's resolved config neither (botocore's own DEBUG log of request
        # bodies does show the function's environment: keep botocore at INFO)
        assert "from-a-secret-ref" not in text


# -- traffic shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("Canary10Percent5Minutes", "10% -> pause 300s -> analysis -> promote"),
        (
            "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
            " -> ".join(f"{w}% -> pause 60s -> analysis" for w in range(10, 100, 10)) + " -> promote",
        ),
        ("AllAtOnce", "promote"),
    ],
)
def test_codedeploy_shapes_expand_into_pipeline_canary_steps(shape: str, expected: str) -> None:
    steps = [CanaryStep.model_validate(s) for s in canary_steps(shape)]
    assert str(canary_plan(1, steps)) == expected


# -- ECS rolling -------------------------------------------------------------------------


def fail_the_rollout(answer: dict[str, Any]) -> dict[str, Any]:
    """What ECS says when the deployment circuit breaker gives up: the PRIMARY
    deployment (of the service's new task definition) FAILED. moto never moves a
    deployment, so the proxy rewrites moto's DescribeServices answer."""
    for svc in answer["services"]:
        for deployment in svc["deployments"]:
            if deployment["status"] == "PRIMARY":
                deployment.update(
                    taskDefinition=svc["taskDefinition"],
                    rolloutState="FAILED",
                    rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
                )
    return answer


async def test_ecs_rolling_follows_the_deployment_and_reports_a_failed_or_late_one(
    moto_server: MotoServer,
    proxy: FaultyProxy,
) -> None:
    ecs = moto_server.client("ecs")
    ecs.create_cluster(clusterName=ENV)
    container = {"name": SERVICE, "image": "registry.example/checkout:0.9.0", "memory": 256}
    container["environment"] = [{"name": "LOG_LEVEL", "value": "info"}]
    td = ecs.register_task_definition(family=SERVICE, containerDefinitions=[container])["taskDefinition"]
    ecs.create_service(
        cluster=ENV, serviceName=SERVICE, taskDefinition=td["taskDefinitionArn"], desiredCount=1
    )
    target = EcsTarget(AwsTargetConfig.model_validate(moto_server.target_config(proxy.url)))

    def rolling(n: int) -> Step:
        version = f"{n}.0.0"
        artifact = f"registry.example/checkout:{version}"
        rel = Release(
            service=SERVICE, environment=ENV, version=version, artifact=artifact, config={"N": str(n)}
        )
        return Step(step_id=f"roll-{n}", deployment_id=f"d-{n}", kind="rolling", release=rel, replicas=2)

    def running() -> tuple[str, int, dict[str, str]]:
        svc = ecs.describe_services(cluster=ENV, services=[SERVICE])["services"][0]
        found = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
        [c] = found["containerDefinitions"]
        return c["image"], svc["desiredCount"], {e["name"]: e["value"] for e in c["environment"]}

    # moto reports one deployment and runningCount == desiredCount at once (the
    # services-stable condition); rolloutState stays IN_PROGRESS
    first = await target.apply(rolling(1))
    assert first.ok, first.error
    assert first.detail["task_definition"].endswith(f"task-definition/{SERVICE}:2")
    assert running() == ("registry.example/checkout:1.0.0", 2, {"LOG_LEVEL": "info", "N": "1"})
    assert [(t.version, t.weight) for t in (await target.status(SERVICE, ENV)).tracks] == [("1.0.0", 100)]
    snapshot = await target.snapshot(SERVICE, ENV)

    proxy.rewrites["DescribeServices"] = fail_the_rollout
    second = await target.apply(rolling(2))
    assert not second.ok
    assert second.error is not None and "DeploymentFailed: ECS deployment circuit breaker" in second.error

    proxy.rewrites.clear()
    restored = await target.restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    assert running() == ("registry.example/checkout:1.0.0", 2, {"LOG_LEVEL": "info", "N": "1"})

    # tasks that never start: the old deployment stays beside the new one, past the deadline
    proxy.rewrites["DescribeServices"] = never_stable
    impatient = EcsTarget(
        AwsTargetConfig.model_validate(moto_server.target_config(proxy.url, rollout_timeout_s=0.3))
    )
    late = await impatient.apply(rolling(3))
    assert not late.ok and late.error is not None and "RolloutTimeout" in late.error


def never_stable(answer: dict[str, Any]) -> dict[str, Any]:
    for svc in answer["services"]:
        svc["runningCount"] = 0
        svc["deployments"].append({**svc["deployments"][0], "status": "ACTIVE"})
    return answer


# -- placement after a restart ----------------------------------------------------------------


def placed(s: Step, settings: dict[str, Any]) -> Step:
    return s.model_copy(update={"release": s.release.model_copy(update={"settings": settings})})


async def test_a_new_lambda_target_snapshots_and_reads_the_function_and_alias_the_settings_name(
    moto_server: MotoServer,
    function: Path,
) -> None:
    """After a restart no apply is remembered: the settings alone say the function is
    ``checkout-fn`` behind alias ``live``, not ``checkout``/``production``."""
    create_function(moto_server, "checkout-fn")
    settings = {"function": "checkout-fn", "alias": "live"}
    assert (await lambda_target(moto_server).apply(placed(step(function, 1, "rolling"), settings))).ok

    restarted = lambda_target(moto_server)
    snapshot = await restarted.snapshot(SERVICE, ENV, settings)
    assert snapshot.version == "1.0.0"
    assert (snapshot.state["function"], snapshot.state["alias"]) == ("checkout-fn", "live")
    status = await restarted.status(SERVICE, ENV, settings)
    assert [(t.version, t.role, t.weight) for t in status.tracks] == [("1.0.0", "stable", 100)]
    # without settings it looks at the function named like the service: no alias there
    assert (await lambda_target(moto_server).snapshot(SERVICE, ENV)).version is None

    assert (await lambda_target(moto_server).apply(placed(step(function, 2, "rolling"), settings))).ok
    restored = await lambda_target(moto_server).restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    live = moto_server.client("lambda").get_alias(FunctionName="checkout-fn", Name="live")
    assert live["FunctionVersion"] == snapshot.state["function_version"]


async def test_a_lambda_rollback_is_healthy_when_the_restored_version_serves(
    moto_server: MotoServer,
    function: Path,
) -> None:
    """The rollback consumer's restore and health check: a new target instance given
    the plan's settings restores the alias, and with no instance to probe the restored
    version is healthy because it serves; a version that does not serve is not."""
    create_function(moto_server, "checkout-fn")
    settings = {"function": "checkout-fn", "alias": "live"}
    first = lambda_target(moto_server)
    assert (await first.apply(placed(step(function, 1, "rolling"), settings))).ok
    snapshot = await first.snapshot(SERVICE, ENV, settings)
    assert (await first.apply(placed(step(function, 2, "set_weight", 10), settings))).ok

    plan = lambda_plan(settings, {"health": None})
    state = replace(fold([emit(plan)]), snapshot=snapshot.model_dump(mode="json"))
    restarted = lambda_target(moto_server)
    ports = Ports(targets=lambda type_, settings: restarted)
    started = RollbackStarted(deployment_id=DEPLOYMENT, reason="alarm", to_version="1.0.0", step_id="rb-1")
    restored = await rollback_restore(ports, plan, state, started)
    assert restored.ok and restored.healthy, restored
    assert restored.detail["health"] == {"serving": "1.0.0", "weight": 100, "probed": False}
    live = moto_server.client("lambda").get_alias(FunctionName="checkout-fn", Name="live")
    weights = (live.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert (live["FunctionVersion"], weights or {}) == (snapshot.state["function_version"], {})

    ok, detail = await healthy(restarted, SERVICE, ENV, "2.0.0", "/healthz", settings)
    assert not ok and "2.0.0 does not serve" in detail["error"]


async def test_a_new_ecs_target_snapshots_and_reads_the_cluster_and_service_the_settings_name(
    moto_server: MotoServer,
) -> None:
    ecs = moto_server.client("ecs")
    ecs.create_cluster(clusterName="shop")
    container = {"name": "app", "image": "registry.example/checkout:0.9.0", "memory": 256}
    td = ecs.register_task_definition(family="checkout-svc", containerDefinitions=[container])
    arn = td["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="shop", serviceName="checkout-svc", taskDefinition=arn, desiredCount=1)
    settings = {"cluster": "shop", "service": "checkout-svc", "container": "app"}
    rel = Release(
        service=SERVICE,
        environment=ENV,
        version="1.0.0",
        artifact="registry.example/checkout:1.0.0",
        settings=settings,
    )
    config = AwsTargetConfig.model_validate(moto_server.target_config())

    def rolling(n: int) -> Step:
        version = f"{n}.0.0"
        update = {"version": version, "artifact": f"registry.example/checkout:{version}"}
        return Step(
            step_id=f"roll-{n}", deployment_id=f"d-{n}", kind="rolling", release=rel.model_copy(update=update)
        )

    def image() -> str:
        [svc] = ecs.describe_services(cluster="shop", services=["checkout-svc"])["services"]
        found = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
        return str(found["containerDefinitions"][0]["image"])

    rolled = await EcsTarget(config).apply(rolling(1))
    assert rolled.ok, rolled.error

    restarted = EcsTarget(config)
    snapshot = await restarted.snapshot(SERVICE, ENV, settings)
    assert snapshot.version == "1.0.0" and snapshot.state["cluster"] == "shop"
    assert list(snapshot.state["services"]) == ["checkout-svc"]
    status = await restarted.status(SERVICE, ENV, settings)
    assert status.reachable and [(t.version, t.weight) for t in status.tracks] == [("1.0.0", 100)]
    # settings apply would refuse are refused here too
    half = {**settings, "colour_services": {"blue": "a", "green": "b"}}
    with pytest.raises(InvalidInput):
        await restarted.snapshot(SERVICE, ENV, half)
    with pytest.raises(InvalidInput):
        await restarted.status(SERVICE, ENV, half)

    # the snapshot names its service: a new instance restores it without settings
    assert (await EcsTarget(config).apply(rolling(2))).ok and image().endswith(":2.0.0")
    restored = await EcsTarget(config).restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    assert image() == "registry.example/checkout:1.0.0"


# -- the record of applied steps ------------------------------------------------------------


def test_step_records_round_trip_and_only_the_newest_are_kept() -> None:
    tags = {"team": "payments"}
    for n in range(25):
        result = StepResult(step_id=f"s{n}", ok=True, detail={"weight": n})
        for name in stale_tags(tags, 20):
            del tags[name]
        tags[step_tag(f"d/s{n}")] = encode_result(result)
    assert len([k for k in tags if k.startswith(STEP_TAG_PREFIX)]) == 20 and tags["team"] == "payments"
    again = recorded(tags, "d/s24", "s24")
    assert again is not None and again.already_applied and again.detail == {"weight": 24}
    assert recorded(tags, "d/s0", "s0") is None  # pruned
    big = encode_result(StepResult(step_id="x", ok=True, detail={"blob": "x" * 500}))
    assert len(big) <= 256
