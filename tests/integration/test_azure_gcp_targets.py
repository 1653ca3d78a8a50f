"""The ``cloud_run`` and ``azure_container_apps`` targets with their official clients
(google-cloud-run REST, azure-mgmt-appcontainers aio) against the strict local fakes
tests/gcpfake.py and tests/azurefake.py (issue 7, items 2-4 and Tests).

Both fakes serve on their own loop in a thread, once per module; every test uses a
fresh service. Polls and retry backoff are shortened through the targets' settings.
The opt-in tests against the real clouds are marked ``real_cloud(provider)`` and
collected only when that provider's variables are set (tests/conftest.py).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from adapters.targets import Release, Step, StepResult, Target, create_target
from adapters.targets.azure import AzureContainerAppsTarget, AzureContainerAppsTargetConfig
from adapters.targets.gcp import CloudRunTarget, CloudRunTargetConfig
from events.errors import AdapterRejected, InvalidInput
from tests.azurefake import AzureFakeServer
from tests.contract_cloud import (
    AZURE_TOKEN,
    GCP_TOKEN,
    MANAGED_ENVIRONMENT,
    PROJECT,
    REGION,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    azure_config,
    azure_server,
    cloud_run_config,
    gcp_server,
)
from tests.gcpfake import GcpFakeServer

pytestmark = pytest.mark.timeout(60)
ENV = "production"


@pytest.fixture(scope="module")
def gcp() -> Iterator[GcpFakeServer]:
    with gcp_server() as server:
        yield server


@pytest.fixture(scope="module")
def azure() -> Iterator[AzureFakeServer]:
    with azure_server() as server:
        yield server


@pytest.fixture(autouse=True)
def no_leftover_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("gcp", "azure"):
        if name in request.fixturenames:
            request.getfixturevalue(name).fake.heal()


@pytest.fixture
def service() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def _release(service: str, version: str, **settings: Any) -> Release:
    return Release(
        service=service,
        environment=ENV,
        version=version,
        artifact=f"registry.example/{service}:{version}",
        config={"GREETING": f"hello {version}"},
        settings=settings,
    )


def _azure_settings() -> dict[str, Any]:
    return {"managed_environment_id": MANAGED_ENVIRONMENT, "location": "westeurope", "target_port": 8080}


def _step(
    service: str, step_id: str, kind: str, version: str, weight: int | None = None, **settings: Any
) -> Step:
    return Step(
        step_id=step_id,
        deployment_id=f"d-{version}",
        kind=kind,  # type: ignore[arg-type]
        release=_release(service, version, **settings),
        weight=weight,
    )


def _gcp_name(service: str) -> str:
    return f"projects/{PROJECT}/locations/{REGION}/services/{service}"


def _azure_key(service: str) -> tuple[str, str, str]:
    return SUBSCRIPTION, RESOURCE_GROUP.lower(), service


async def _ok(target: Target, step: Step) -> StepResult:
    result = await target.apply(step)
    assert result.ok, result.error
    return result


# -- 80/20 and back ------------------------------------------------------------------


async def test_cloud_run_revisions_split_80_20_then_the_snapshot_restores_them(
    gcp: GcpFakeServer, service: str
) -> None:
    target = CloudRunTarget(cloud_run_config(gcp))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0"))
    snapshot = await target.snapshot(service, ENV)
    assert snapshot.version == "1.0.0"

    result = await _ok(target, _step(service, "canary-20", "set_weight", "2.0.0", weight=20))
    assert result.detail["revision"] == f"{service}-2-0-0"
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 80, f"{service}-2-0-0": 20}
    status = await target.status(service, ENV)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.0.0", "stable", 80),
        ("2.0.0", "canary", 20),
    }
    template = gcp.fake.services[_gcp_name(service)].template
    assert template.containers[0].image == f"registry.example/{service}:2.0.0"
    assert [(e.name, e.value) for e in template.containers[0].env] == [("GREETING", "hello 2.0.0")]

    # by another process, which knows no project or region: the snapshot names the service
    elsewhere = CloudRunTarget(cloud_run_config(gcp, project=None, region=None))
    restored = await elsewhere.restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 100}
    assert [(t.version, t.weight) for t in (await target.status(service, ENV)).tracks] == [("1.0.0", 100)]


async def test_azure_revisions_split_80_20_then_the_snapshot_restores_them(
    azure: AzureFakeServer, service: str
) -> None:
    target = AzureContainerAppsTarget(azure_config(azure))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    snapshot = await target.snapshot(service, ENV)
    assert snapshot.version == "1.0.0"

    result = await _ok(target, _step(service, "canary-20", "set_weight", "2.0.0", weight=20))
    assert result.detail["revision"] == f"{service}--v2-0-0"
    key = _azure_key(service)
    assert azure.fake.serving(key) == {f"{service}--v1-0-0": 80, f"{service}--v2-0-0": 20}
    app = azure.fake.apps[key]["properties"]
    assert app["configuration"]["activeRevisionsMode"] == "Multiple"
    assert app["template"]["containers"][0]["env"] == [{"name": "GREETING", "value": "hello 2.0.0"}]
    status = await target.status(service, ENV)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.0.0", "stable", 80),
        ("2.0.0", "canary", 20),
    }

    # by another process, which knows no subscription or group: the snapshot names the app
    elsewhere = AzureContainerAppsTarget(azure_config(azure, subscription_id=None, resource_group=None))
    restored = await elsewhere.restore(snapshot, step_id="restore-d-2")
    assert restored.ok, restored.error
    assert azure.fake.serving(key) == {f"{service}--v1-0-0": 100}
    assert [(t.version, t.weight) for t in (await target.status(service, ENV)).tracks] == [("1.0.0", 100)]


# -- blue-green ----------------------------------------------------------------------


async def test_cloud_run_preview_is_a_tagged_revision_at_zero_percent(
    gcp: GcpFakeServer, service: str
) -> None:
    target = CloudRunTarget(cloud_run_config(gcp))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0"))
    await _ok(target, _step(service, "preview", "preview", "2.0.0"))

    routes = [(t.revision, t.percent, t.tag) for t in gcp.fake.services[_gcp_name(service)].traffic]
    assert routes == [(f"{service}-1-0-0", 100, ""), (f"{service}-2-0-0", 0, "preview")]
    preview = [t for t in (await target.status(service, ENV)).tracks if t.role == "preview"]
    assert [(t.version, t.weight) for t in preview] == [("2.0.0", 0)]
    assert preview[0].urls == [f"https://preview---{service}-fake.a.run.app"]

    await _ok(target, _step(service, "switch", "switch", "2.0.0"))
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-2-0-0": 100}
    assert all(not t.tag for t in gcp.fake.services[_gcp_name(service)].traffic)


async def test_azure_preview_is_a_labelled_revision_and_switch_moves_the_active_label(
    azure: AzureFakeServer, service: str
) -> None:
    target = AzureContainerAppsTarget(azure_config(azure))
    key = _azure_key(service)
    await _ok(target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    await _ok(target, _step(service, "preview", "preview", "2.0.0"))

    weights = [(w["revisionName"], w["weight"], w.get("label")) for w in azure.fake.traffic(key)]
    assert weights == [(f"{service}--v1-0-0", 100, None), (f"{service}--v2-0-0", 0, "preview")]
    preview = [t for t in (await target.status(service, ENV)).tracks if t.role == "preview"]
    assert [(t.version, t.weight) for t in preview] == [("2.0.0", 0)]
    assert preview[0].urls[0].startswith(f"https://{service}---preview.")

    await _ok(target, _step(service, "switch", "switch", "2.0.0"))
    weights = [(w["revisionName"], w["weight"], w.get("label")) for w in azure.fake.traffic(key)]
    assert weights == [(f"{service}--v2-0-0", 100, "active")]
    done = await _ok(target, _step(service, "scale-down", "scale_down", "2.0.0"))
    assert done.detail["deactivated"] == [f"{service}--v1-0-0"]
    assert not azure.fake.revisions[key][f"{service}--v1-0-0"].active


# -- one revision per version -------------------------------------------------------


async def test_redeploying_an_older_version_routes_to_its_revision_and_never_rebuilds_it(
    gcp: GcpFakeServer, azure: AzureFakeServer, service: str
) -> None:
    gcp_target = CloudRunTarget(cloud_run_config(gcp))
    azure_target = AzureContainerAppsTarget(azure_config(azure))
    for target, settings in ((gcp_target, {}), (azure_target, _azure_settings())):
        await _ok(target, _step(service, "v1", "rolling", "1.0.0", **settings))
        await _ok(target, _step(service, "v2", "rolling", "2.0.0"))
        again = await _ok(target, _step(service, "v1-again", "rolling", "1.0.0"))
        assert not again.already_applied
        other = _step(service, "v1-other-image", "rolling", "1.0.0")
        other = other.model_copy(
            update={"release": other.release.model_copy(update={"artifact": "registry.example/other:1"})}
        )
        with pytest.raises(AdapterRejected, match="never rebuilt"):
            await target.apply(other)
    gcp_revisions = sorted(r.name for r in gcp.fake.revisions.values() if r.service == _gcp_name(service))
    assert gcp_revisions == [f"{service}-1-0-0", f"{service}-2-0-0"]
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 100}
    assert sorted(azure.fake.revisions[_azure_key(service)]) == [f"{service}--v1-0-0", f"{service}--v2-0-0"]
    assert azure.fake.serving(_azure_key(service)) == {f"{service}--v1-0-0": 100}


# -- a revision that never gets ready ------------------------------------------------


async def test_a_cloud_run_revision_that_never_gets_ready_fails_the_step(
    gcp: GcpFakeServer, service: str
) -> None:
    target = CloudRunTarget(cloud_run_config(gcp))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0"))
    gcp.fake.never_ready.add(f"registry.example/{service}:2.0.0")

    result = await target.apply(_step(service, "v2", "rolling", "2.0.0"))
    assert not result.ok
    assert result.error is not None and "not ready" in result.error
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 100}


async def test_an_azure_revision_that_fails_to_provision_fails_the_step(
    azure: AzureFakeServer, service: str
) -> None:
    target = AzureContainerAppsTarget(azure_config(azure))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    azure.fake.never_ready.add(f"registry.example/{service}:2.0.0")

    result = await target.apply(_step(service, "v2", "set_weight", "2.0.0", weight=20))
    assert not result.ok
    assert result.error is not None and "rollout failed" in result.error
    assert azure.fake.serving(_azure_key(service)) == {f"{service}--v1-0-0": 100}


# -- 5xx and throttling --------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
async def test_cloud_run_retries_5xx_and_throttling_then_succeeds(
    gcp: GcpFakeServer, service: str, status: int
) -> None:
    target = CloudRunTarget(cloud_run_config(gcp))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0"))
    before = len(gcp.fake.requests)
    gcp.fake.fail(status, 2)

    await _ok(target, _step(service, "canary", "set_weight", "2.0.0", weight=20))
    assert gcp.fake.answered[before : before + 2] == [status, status]
    # then get service, get revision, update, a poll or more, record (done at once)
    assert len(gcp.fake.answered) - before >= 2 + 5
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 80, f"{service}-2-0-0": 20}


@pytest.mark.parametrize("status", [503, 429])
async def test_azure_retries_5xx_and_throttling_then_succeeds(
    azure: AzureFakeServer, service: str, status: int
) -> None:
    target = AzureContainerAppsTarget(azure_config(azure))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    before = len(azure.fake.requests)
    azure.fake.fail(status, 2)

    await _ok(target, _step(service, "canary", "set_weight", "2.0.0", weight=20))
    assert azure.fake.answered[before : before + 2] == [status, status]
    assert len(azure.fake.answered) - before > 2 + 6  # the step went on to the end
    assert azure.fake.serving(_azure_key(service)) == {f"{service}--v1-0-0": 80, f"{service}--v2-0-0": 20}


@pytest.mark.parametrize("status", [429, 502, 503])
async def test_a_throttled_or_failed_update_is_retried_too(
    gcp: GcpFakeServer, azure: AzureFakeServer, service: str, status: int
) -> None:
    """Updates are PATCH requests, which the clients do not retry on every status by
    default: these targets send only declarative updates, so they retry them all."""
    gcp_target = CloudRunTarget(cloud_run_config(gcp))
    azure_target = AzureContainerAppsTarget(azure_config(azure))
    await _ok(gcp_target, _step(service, "v1", "rolling", "1.0.0"))
    await _ok(azure_target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    gcp_patches = sum(1 for m, _, _ in gcp.fake.requests if m == "PATCH")
    azure_patches = sum(1 for m, _, _ in azure.fake.requests if m == "PATCH")
    gcp.fake.fail(status, 2, method="PATCH")
    azure.fake.fail(status, 2, method="PATCH")

    await _ok(gcp_target, _step(service, "c", "set_weight", "2.0.0", weight=20))
    await _ok(azure_target, _step(service, "c", "set_weight", "2.0.0", weight=20))
    # two refused, then the traffic update and the record (azure: template, traffic, record)
    assert sum(1 for m, _, _ in gcp.fake.requests if m == "PATCH") == gcp_patches + 2 + 2
    assert sum(1 for m, _, _ in azure.fake.requests if m == "PATCH") == azure_patches + 2 + 3
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 80, f"{service}-2-0-0": 20}
    assert azure.fake.serving(_azure_key(service)) == {f"{service}--v1-0-0": 80, f"{service}--v2-0-0": 20}


@pytest.mark.parametrize("status", [503, 429])
async def test_a_cloud_run_api_that_stays_down_is_the_steps_error(
    gcp: GcpFakeServer, service: str, status: int
) -> None:
    target = CloudRunTarget(cloud_run_config(gcp, retry_timeout=0.3))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0"))
    before = len(gcp.fake.requests)
    gcp.fake.fail(status, 10_000)

    result = await target.apply(_step(service, "v2", "rolling", "2.0.0"))
    assert not result.ok and not result.already_applied
    assert result.error is not None
    assert "still unavailable after retrying" in result.error and str(status) in result.error
    assert len(gcp.fake.requests) - before > 2  # retried, with backoff, within the budget
    status_now = await target.status(service, ENV)
    assert not status_now.reachable
    gcp.fake.heal()
    assert gcp.fake.serving(_gcp_name(service)) == {f"{service}-1-0-0": 100}


@pytest.mark.parametrize("status", [503, 429])
async def test_an_azure_api_that_stays_down_is_the_steps_error(
    azure: AzureFakeServer, service: str, status: int
) -> None:
    target = AzureContainerAppsTarget(azure_config(azure))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    before = len(azure.fake.requests)
    azure.fake.fail(status, 10_000)

    result = await target.apply(_step(service, "v2", "rolling", "2.0.0"))
    assert not result.ok and not result.already_applied
    assert result.error is not None
    assert f"azure API {status}" in result.error and "after 3 retries" in result.error
    assert len(azure.fake.requests) - before == 1 + 3  # the request and its three retries
    assert not (await target.status(service, ENV)).reachable
    azure.fake.heal()
    assert azure.fake.serving(_azure_key(service)) == {f"{service}--v1-0-0": 100}


# -- placement after a restart ----------------------------------------------------------


async def test_a_new_cloud_run_target_reads_the_project_region_and_service_the_settings_name(
    gcp: GcpFakeServer, service: str
) -> None:
    """After a restart no apply is remembered: the settings alone say the service is
    ``<service>-api`` in another project and region than the config's."""
    settings = {"project": "other-project", "region": "us-central1", "service_name": f"{service}-api"}
    await _ok(CloudRunTarget(cloud_run_config(gcp)), _step(service, "v1", "rolling", "1.0.0", **settings))
    name = f"projects/other-project/locations/us-central1/services/{service}-api"
    assert gcp.fake.serving(name) == {f"{service}-api-1-0-0": 100}

    restarted = CloudRunTarget(cloud_run_config(gcp))
    snapshot = await restarted.snapshot(service, ENV, settings)
    assert snapshot.version == "1.0.0" and snapshot.state["name"] == name
    status = await restarted.status(service, ENV, settings)
    assert status.reachable and [(t.version, t.weight) for t in status.tracks] == [("1.0.0", 100)]
    # without settings it looks for the service in the config's project: none there
    assert (await CloudRunTarget(cloud_run_config(gcp)).snapshot(service, ENV)).version is None
    with pytest.raises(InvalidInput):  # as apply refuses them
        await restarted.status(service, ENV, {**settings, "preview_tag": "Not A Tag"})


async def test_a_new_azure_target_reads_the_subscription_group_and_app_the_settings_name(
    azure: AzureFakeServer, service: str
) -> None:
    settings = {
        **_azure_settings(),
        "subscription_id": "11111111-1111-1111-1111-111111111111",
        "resource_group": "rg-other",
        "container_app": f"{service}-app",
    }
    await _ok(
        AzureContainerAppsTarget(azure_config(azure)), _step(service, "v1", "rolling", "1.0.0", **settings)
    )
    key = ("11111111-1111-1111-1111-111111111111", "rg-other", f"{service}-app")
    assert azure.fake.serving(key) == {f"{service}-app--v1-0-0": 100}

    restarted = AzureContainerAppsTarget(azure_config(azure))
    try:
        snapshot = await restarted.snapshot(service, ENV, settings)
        assert snapshot.version == "1.0.0"
        assert (snapshot.state["resource_group"], snapshot.state["container_app"]) == key[1:]
        status = await restarted.status(service, ENV, settings)
        assert status.reachable and [(t.version, t.weight) for t in status.tracks] == [("1.0.0", 100)]
        # without settings it looks for the app in the config's group: none there
        assert (await restarted.snapshot(service, ENV)).version is None
        with pytest.raises(InvalidInput):  # as apply refuses them
            await restarted.snapshot(service, ENV, {**settings, "target_port": 0})
    finally:
        await restarted.close()


# -- credentials ---------------------------------------------------------------------


def _text(*items: object) -> str:
    out = []
    for item in items:
        dump = getattr(item, "model_dump_json", None)
        out.append(dump() if dump is not None else json.dumps(item, default=str))
    return "\n".join(out)


async def test_credentials_never_appear_in_results_snapshots_status_or_logs(
    gcp: GcpFakeServer, azure: AzureFakeServer, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gcp_target = CloudRunTarget(cloud_run_config(gcp, retry_timeout=0.2))
    azure_target = AzureContainerAppsTarget(azure_config(azure))
    outputs: list[object] = []
    for target, settings in ((gcp_target, {}), (azure_target, _azure_settings())):
        outputs.append(await _ok(target, _step(service, "v1", "rolling", "1.0.0", **settings)))
        outputs.append(await target.snapshot(service, ENV))
        outputs.append(await _ok(target, _step(service, "c", "set_weight", "2.0.0", weight=20)))
        outputs.append(await target.status(service, ENV))
    # errors too: the API down, and the API refusing the credentials
    gcp.fake.fail(503, 10_000)
    azure.fake.fail(503, 10_000)
    outputs.append(await gcp_target.apply(_step(service, "v3", "rolling", "3.0.0")))
    outputs.append(await azure_target.apply(_step(service, "v3", "rolling", "3.0.0")))
    gcp.fake.heal()
    azure.fake.heal()
    outputs.append(gcp_target.config)
    outputs.append(azure_target.config)
    outputs.append(repr(gcp_target.config) + repr(azure_target.config))

    # the tokens were sent...
    assert any(auth == f"Bearer {GCP_TOKEN}" for _, _, auth in gcp.fake.requests)
    assert any(auth == f"Bearer {AZURE_TOKEN}" for _, _, auth in azure.fake.requests)
    # ...and never came back out
    text = _text(*outputs) + caplog.text
    for token in (GCP_TOKEN, AZURE_TOKEN):
        assert token not in text
        assert token.split(".")[-1] not in text


async def test_refused_credentials_are_reported_without_the_token(
    gcp: GcpFakeServer, azure: AzureFakeServer, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    from google.oauth2.credentials import Credentials

    from tests.contract_cloud import StaticTokenCredential

    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-token-123"
    gcp_target = CloudRunTarget(cloud_run_config(gcp, credentials=Credentials(token=wrong)))
    azure_target = AzureContainerAppsTarget(azure_config(azure, credential=StaticTokenCredential(wrong)))
    messages = []
    for target, settings in ((gcp_target, {}), (azure_target, _azure_settings())):
        with pytest.raises(AdapterRejected) as refused:
            await target.apply(_step(service, "v1", "rolling", "1.0.0", **settings))
        messages.append(str(refused.value))
    assert all("credentials refused" in m for m in messages), messages
    assert wrong not in "\n".join(messages) + caplog.text


# -- the fakes are strict ------------------------------------------------------------


async def test_the_gcp_fake_refuses_fields_the_api_does_not_declare(gcp: GcpFakeServer, service: str) -> None:
    target = CloudRunTarget(cloud_run_config(gcp))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0"))
    headers = {"Authorization": f"Bearer {GCP_TOKEN}"}
    url = f"{gcp.url}/v2/{_gcp_name(service)}"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.patch(url, json={"template": {"containerz": []}}) as r:
            assert r.status == 400
            assert "containerz" in (await r.json())["error"]["message"]
        async with s.patch(url, json={"traffic": [{"revision": "nope", "percent": 100, "type": 2}]}) as r:
            assert r.status == 400
        async with s.get(url, params={"bogus": "1"}) as r:
            assert r.status == 400


async def test_the_azure_fake_refuses_keys_the_sdk_model_does_not_declare(
    azure: AzureFakeServer, service: str
) -> None:
    target = AzureContainerAppsTarget(azure_config(azure))
    await _ok(target, _step(service, "v1", "rolling", "1.0.0", **_azure_settings()))
    headers = {"Authorization": f"Bearer {AZURE_TOKEN}"}
    url = (
        f"{azure.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.App/containerApps/{service}"
    )
    params = {"api-version": "2026-07-01"}
    bad = [
        {"properties": {"configuration": {"ingress": {"traffic": [{"revision": "x", "weight": 100}]}}}},
        {"properties": {"latestRevisionName": "x"}},  # read-only: the SDK never sends it
        {"properties": {"configuration": {"ingress": {"traffic": [{"revisionName": "x", "weight": 100}]}}}},
    ]
    async with aiohttp.ClientSession(headers=headers) as s:
        for body in bad:
            async with s.patch(url, json=body, params=params) as r:
                assert r.status == 400, body
        async with s.get(url) as r:
            assert r.status == 400  # no api-version


async def test_the_factory_builds_both_targets() -> None:
    gcp_target = create_target("cloud_run", {"project": PROJECT, "region": REGION})
    azure_target = create_target(
        "azure_container_apps", {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP}
    )
    assert isinstance(gcp_target, CloudRunTarget) and isinstance(azure_target, AzureContainerAppsTarget)


# -- the real clouds (opt-in) --------------------------------------------------------


@pytest.mark.real_cloud("gcp")  # collected only with SHIPLOG_TEST_GCP_PROJECT (tests/conftest.py)
async def test_cloud_run_canary_on_the_real_cloud() -> None:
    """Application Default Credentials; SHIPLOG_TEST_GCP_REGION (default europe-west1)."""
    config = CloudRunTargetConfig(
        project=os.environ["SHIPLOG_TEST_GCP_PROJECT"],
        region=os.environ.get("SHIPLOG_TEST_GCP_REGION", "europe-west1"),
    )
    await _real_cloud_canary(CloudRunTarget(config), "us-docker.pkg.dev/cloudrun/container/hello", {})


@pytest.mark.real_cloud("azure")  # collected only with SHIPLOG_TEST_AZURE_SUBSCRIPTION (tests/conftest.py)
async def test_azure_canary_on_the_real_cloud() -> None:
    """DefaultAzureCredential; SHIPLOG_TEST_AZURE_RESOURCE_GROUP, _ENVIRONMENT_ID, _LOCATION."""
    config = AzureContainerAppsTargetConfig(
        subscription_id=os.environ["SHIPLOG_TEST_AZURE_SUBSCRIPTION"],
        resource_group=os.environ["SHIPLOG_TEST_AZURE_RESOURCE_GROUP"],
    )
    settings = {
        "managed_environment_id": os.environ["SHIPLOG_TEST_AZURE_ENVIRONMENT_ID"],
        "location": os.environ.get("SHIPLOG_TEST_AZURE_LOCATION", "westeurope"),
        "target_port": 80,
    }
    target = AzureContainerAppsTarget(config)
    try:
        await _real_cloud_canary(target, "mcr.microsoft.com/k8se/quickstart:latest", settings)
    finally:
        await target.close()


async def _real_cloud_canary(target: Target, image: str, settings: dict[str, Any]) -> None:
    """v1, then v2 at 20%, then the snapshot restored; the service is left running v1."""
    service = f"shiplog-it-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:6]

    def step(step_id: str, kind: str, version: str, weight: int | None = None) -> Step:
        release = Release(
            service=service,
            environment=ENV,
            version=version,
            artifact=image,
            config={"SHIPLOG_RUN": f"{run}-{version}"},
            settings=settings,
        )
        return Step(step_id=step_id, deployment_id=run, kind=kind, release=release, weight=weight)  # type: ignore[arg-type]

    await _ok(target, step("v1", "rolling", "1.0.0"))
    snapshot = await target.snapshot(service, ENV)
    await _ok(target, step("c20", "set_weight", "2.0.0", weight=20))
    weights = {t.version: t.weight for t in (await target.status(service, ENV)).tracks}
    assert weights == {"1.0.0": 80, "2.0.0": 20}
    assert (await target.restore(snapshot, step_id="restore")).ok
    assert {t.version: t.weight for t in (await target.status(service, ENV)).tracks} == {"1.0.0": 100}
