"""The target contract, written once and run for every target (issue 6, Tests):
apply a strategy's steps, read status, snapshot, restore, restore twice is
harmless, the same step id twice is harmless, a new target instance (a process
restart over the same state and config) re-driving a step converges, and a new
instance given the release's settings snapshots and reads status where the first
applied, and a later new instance given the settings restores that snapshot (v1
back). Snapshot, status and that restore get the release's settings, as the
consumers pass the plan's.

Each case runs per (target, strategy) for the strategies the target's Capabilities
declare (tests/targetcontract.py ``strategies``): rolling for all; blue-green and
canary only where ``two_colours`` / ``traffic_split`` say so (read from the
classes at collection time, so a target that gains a strategy gains its cases;
dbmigrate declares neither, ssh two colours only). No parameter is generated for a
strategy a target does not support, so nothing skips. Version 1 is always brought by
the rolling step; version 2 by the strategy under test. The observation never asks
the target (see the harnesses).

The servers — the sshd cluster, the Kubernetes fake, moto (ECS, Lambda) and the
Cloud Run and Container Apps fakes — are started once per module; every test uses a
fresh service (and, for dbmigrate, a fresh database).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from adapters.targets import Step, StepResult, Target
from adapters.targets.aws import EcsTarget
from adapters.targets.azure import AzureContainerAppsTarget
from adapters.targets.dbmigrate import DbMigrateTarget
from adapters.targets.gcp import CloudRunTarget
from adapters.targets.kubernetes import KubernetesTarget
from adapters.targets.local import LocalTarget
from adapters.targets.serverless import LambdaTarget
from adapters.targets.ssh import SshTarget
from tests.azurefake import AzureFakeServer
from tests.contract_aws import EcsHarness, LambdaHarness
from tests.contract_cloud import AzureContainerAppsHarness, CloudRunHarness, azure_server, gcp_server
from tests.gcpfake import GcpFakeServer
from tests.motoserver import moto_server, moto_session  # noqa: F401 - fixtures of the aws harnesses
from tests.sshd import SshdCluster
from tests.targetcontract import (
    DbMigrateHarness,
    Harness,
    KubeFakeServer,
    KubernetesHarness,
    LocalHarness,
    SshHarness,
    Strategy,
    kube_fake_server,
    strategies,
    strategy_steps,
)

pytestmark = pytest.mark.timeout(120)

TARGETS: dict[str, type] = {
    "local": LocalTarget,
    "ssh": SshTarget,
    "kubernetes": KubernetesTarget,
    "dbmigrate": DbMigrateTarget,
    "lambda": LambdaTarget,
    "ecs": EcsTarget,
    "cloud_run": CloudRunTarget,
    "azure_container_apps": AzureContainerAppsTarget,
}
CASES = [(name, strategy) for name, cls in TARGETS.items() for strategy in strategies(cls)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=[f"{n}-{s}" for n, s in CASES], indirect=True)


# -- shared servers (once per module) ------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    cluster = SshdCluster(tmp_path_factory.mktemp("contract-sshd"), 2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeFakeServer]:
    with kube_fake_server(tmp_path_factory.mktemp("contract-kube")) as server:
        yield server


@pytest.fixture(scope="module")
def gcp_fake() -> Iterator[GcpFakeServer]:
    with gcp_server() as server:
        yield server


@pytest.fixture(scope="module")
def azure_fake() -> Iterator[AzureFakeServer]:
    with azure_server() as server:
        yield server


async def _fresh_database(postgres_dsn: str) -> tuple[str, str]:
    name = f"contract_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, urlsplit(postgres_dsn)._replace(path=f"/{name}").geturl()


async def _drop_database(postgres_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def case(request: pytest.FixtureRequest) -> tuple[str, Strategy]:
    name, strategy = request.param
    return name, strategy


@pytest.fixture
async def harness(
    case: tuple[str, Strategy], request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    name, _ = case
    service = f"svc-{uuid.uuid4().hex[:8]}"
    h: Harness
    database: str | None = None
    postgres_dsn = ""
    if name == "local":
        h = LocalHarness(tmp_path, service)
    elif name == "ssh":
        h = SshHarness(tmp_path, service, request.getfixturevalue("sshd"))
    elif name == "kubernetes":
        h = KubernetesHarness(service, request.getfixturevalue("kube"))
    elif name == "lambda":
        h = LambdaHarness(tmp_path, service, request.getfixturevalue("moto_server"))
    elif name == "ecs":
        h = EcsHarness(service, request.getfixturevalue("moto_server"))
    elif name == "cloud_run":
        h = CloudRunHarness(service, request.getfixturevalue("gcp_fake"))
    elif name == "azure_container_apps":
        h = AzureContainerAppsHarness(service, request.getfixturevalue("azure_fake"))
    else:
        postgres_dsn = request.getfixturevalue("postgres_dsn")
        database, url = await _fresh_database(postgres_dsn)
        h = DbMigrateHarness(tmp_path, service.replace("-", "_"), url)
    try:
        yield h
    finally:
        await h.close()
        if database is not None:
            await _drop_database(postgres_dsn, database)


@pytest.fixture
def strategy(case: tuple[str, Strategy]) -> Strategy:
    return case[1]


# -- helpers -------------------------------------------------------------------------


async def apply_all(target: Target, steps: list[Step]) -> list[StepResult]:
    results = []
    for step in steps:
        result = await target.apply(step)
        assert result.ok, f"{step.kind} ({step.step_id}): {result.error}"
        results.append(result)
    return results


def v1_steps(h: Harness) -> list[Step]:
    return strategy_steps(h.release(1), "rolling", "v1")


def v2_steps(h: Harness, strategy: Strategy) -> list[Step]:
    return strategy_steps(h.release(2), strategy, "v2")


def settings(h: Harness, n: int) -> dict[str, Any]:
    """Version ``n``'s target settings, as callers pass them to snapshot and status."""
    return h.release(n).settings


async def serving(target: Target, h: Harness, n: int) -> list[str]:
    status = await target.status(h.service, h.environment, settings(h, n))
    assert status.reachable
    return [t.version for t in status.tracks if t.weight > 0]


# -- the contract --------------------------------------------------------------------


async def test_apply_v1_then_v2_status_and_observation_agree(harness: Harness, strategy: Strategy) -> None:
    target = harness.target()
    await apply_all(target, v1_steps(harness))
    assert await harness.observe() == harness.expected(1)
    assert await serving(target, harness, 1) == [harness.expected(1)]

    await apply_all(target, v2_steps(harness, strategy))
    assert await harness.observe() == harness.expected(2)
    assert await serving(target, harness, 2) == [harness.expected(2)]


async def test_snapshot_then_restore_brings_v1_back(harness: Harness, strategy: Strategy) -> None:
    target = harness.target()
    await apply_all(target, v1_steps(harness))
    snapshot = await target.snapshot(harness.service, harness.environment, settings(harness, 1))
    await apply_all(target, v2_steps(harness, strategy))
    assert await harness.observe() == harness.expected(2)

    restored = await target.restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    assert await harness.observe() == harness.expected(1)
    assert await serving(target, harness, 1) == [harness.expected(1)]


async def test_restore_twice_is_harmless(harness: Harness, strategy: Strategy) -> None:
    target = harness.target()
    await apply_all(target, v1_steps(harness))
    snapshot = await target.snapshot(harness.service, harness.environment, settings(harness, 1))
    await apply_all(target, v2_steps(harness, strategy))
    first = await target.restore(snapshot, step_id="restore-d-2")
    assert first.ok, first.error
    observed, effects = await harness.observe(), await harness.effects()

    second = await target.restore(snapshot, step_id="restore-d-2")
    assert second.ok and second.already_applied, second
    assert await harness.observe() == observed == harness.expected(1)
    assert await harness.effects() == effects


async def test_the_same_step_id_twice_is_harmless(harness: Harness, strategy: Strategy) -> None:
    target = harness.target()
    await apply_all(target, v1_steps(harness))
    steps = v2_steps(harness, strategy)
    await apply_all(target, steps)
    effects = await harness.effects()

    again = await apply_all(target, steps)
    assert all(r.already_applied for r in again), again
    assert await harness.observe() == harness.expected(2)
    assert await harness.effects() == effects


async def test_apply_after_a_crash_mid_step_converges(harness: Harness, strategy: Strategy) -> None:
    """The driver crashed after the target acted and before the saga recorded the
    step: a NEW target instance (same state dir and config, as after a restart) is
    handed the same step ids again. Every step converges to v2 and nothing is done twice."""
    first = harness.target()
    await apply_all(first, v1_steps(harness))
    steps = v2_steps(harness, strategy)
    await apply_all(first, steps)
    effects = await harness.effects()

    restarted = harness.target()
    await apply_all(restarted, steps)
    assert await harness.observe() == harness.expected(2)
    assert await serving(restarted, harness, 2) == [harness.expected(2)]
    assert await harness.effects() == effects


async def test_a_new_instance_given_the_settings_snapshots_what_a_later_restore_brings_back(
    harness: Harness, strategy: Strategy
) -> None:
    """The execution consumer after a restart: a new instance, given the release's
    settings and remembering no apply, snapshots v1 where the applying instance put
    it and reads its status there; the rollback consumer after another restart: a new
    instance given the plan's (v2's) settings restores that snapshot, bringing v1 back."""
    await apply_all(harness.target(), v1_steps(harness))
    restarted = harness.target()
    snapshot = await restarted.snapshot(harness.service, harness.environment, settings(harness, 1))
    assert snapshot.version == harness.expected(1)
    assert await serving(restarted, harness, 1) == [harness.expected(1)]

    await apply_all(restarted, v2_steps(harness, strategy))
    assert await harness.observe() == harness.expected(2)
    restored = await harness.target().restore(snapshot, step_id="restore-d-2", settings=settings(harness, 2))
    assert restored.ok, restored.error
    assert await harness.observe() == harness.expected(1)
    assert await serving(harness.target(), harness, 1) == [harness.expected(1)]
