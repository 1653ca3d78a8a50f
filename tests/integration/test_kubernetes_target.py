"""The kubernetes target with the real kubernetes-asyncio client against tests/kubefake.py.

The fixture serves the fake on a free port and writes a kubeconfig pointing at it.
Set ``SHIPLOG_TEST_KUBECONFIG`` to also run the rolling test against a real cluster.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.targets import Release, Step, create_target
from adapters.targets.kubernetes import KubernetesTarget, KubernetesTargetConfig
from events.errors import InvalidInput
from tests.kubefake import KubeFake

pytestmark = pytest.mark.timeout(60)
NS = "staging"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[KubeFake, str, Path]]:
    kube = KubeFake(tick=0.02)
    runner = web.AppRunner(kube.app())
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    url = f"http://127.0.0.1:{port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "fake", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    yield kube, url, kubeconfig
    await runner.cleanup()


def _target(kubeconfig: Path) -> KubernetesTarget:
    return KubernetesTarget(KubernetesTargetConfig(kubeconfig=kubeconfig, rollout_timeout=20))


def _step(
    step_id: str,
    version: str,
    *,
    config: dict[str, str] | None = None,
    deployment_id: str = "d1",
    **settings: Any,
) -> Step:
    release = Release(
        service="web",
        environment=NS,
        version=version,
        artifact=f"registry.example/web:{version}",
        config=config or {},
        settings={"port": 8080, **settings},
    )
    return Step(step_id=step_id, deployment_id=deployment_id, kind="rolling", release=release, replicas=3)


async def _service(url: str, selector: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": selector, "ports": [{"port": 80}]},
    }
    async with aiohttp.ClientSession() as s, s.post(f"{url}/api/v1/namespaces/{NS}/services", json=body) as r:
        assert r.status == 201, await r.text()


def _container(kube: KubeFake) -> dict[str, Any]:
    dep = kube.objects[("deployments", NS, "web")]
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def test_registered_on_import(tmp_path: Path) -> None:
    target = create_target("kubernetes", {"kubeconfig": str(tmp_path / "k")})
    assert isinstance(target, KubernetesTarget)


async def test_rolling_update_completes_with_new_image(fake: tuple[KubeFake, str, Path]) -> None:
    kube, _, kubeconfig = fake
    target = _target(kubeconfig)
    first = await target.apply(_step("s1", "1.0.0"))
    assert first.ok, first.error
    second = await target.apply(_step("s2", "1.1.0", config={"MODE": "new"}))
    assert second.ok, second.error
    container = _container(kube)
    assert container["image"] == "registry.example/web:1.1.0"
    assert container["env"] == [{"name": "MODE", "value": "new"}]
    dep = kube.objects[("deployments", NS, "web")]
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"] == 2
    assert dep["status"]["availableReplicas"] == 3
    assert any(m["manager"] == "shiplog" for m in dep["metadata"]["managedFields"])
    # the client's real request shapes: a strategic-merge patch with fieldManager
    assert (
        "PATCH",
        f"/apis/apps/v1/namespaces/{NS}/deployments/web",
        "application/strategic-merge-patch+json",
    ) in kube.requests
    status = await target.status("web", NS)
    assert status.reachable and [(t.version, t.role) for t in status.tracks] == [("1.1.0", "stable")]
    # the same step id again: nothing done, the recorded result
    generation = dep["metadata"]["generation"]
    again = await target.apply(_step("s2", "1.1.0", config={"MODE": "new"}))
    assert again.ok and again.already_applied
    assert kube.objects[("deployments", NS, "web")]["metadata"]["generation"] == generation


async def test_rollout_that_never_becomes_available_fails_with_deadline(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, _, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0", progress_deadline_seconds=1))).ok
    kube.never_available.add("registry.example/web:1.1.0")
    result = await target.apply(_step("s2", "1.1.0"))
    assert not result.ok
    assert result.error is not None and result.error.startswith("ProgressDeadlineExceeded")
    # a failed step is not recorded as applied: re-driving it tries (and fails) again
    assert not (await target.apply(_step("s2", "1.1.0"))).already_applied


async def test_snapshot_deploy_restore_brings_back_image_env_and_selectors(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0", config={"A": "1", "B": "2"}))).ok
    await _service(url, {"app": "web"})
    # an env entry from a secret, set by someone else: the snapshot keeps it whole
    secret_env = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [secret_env]}]}}}}
    async with (
        aiohttp.ClientSession() as s,
        s.patch(
            f"{url}/apis/apps/v1/namespaces/{NS}/deployments/web",
            data=json.dumps(patch),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    snapshot = await target.snapshot("web", NS)
    assert snapshot.version == "1.0.0"
    assert (await target.apply(_step("s1", "1.1.0", config={"A": "9", "C": "3"}, deployment_id="d2"))).ok
    # someone re-pointed the Service meanwhile
    async with aiohttp.ClientSession() as s:
        async with s.patch(
            f"{url}/api/v1/namespaces/{NS}/services/web",
            data=json.dumps({"spec": {"selector": {"colour": "green"}}}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as r:
            assert r.status == 200
    restored = await target.restore(snapshot, step_id="d2/rollback")
    assert restored.ok, restored.error
    container = _container(kube)
    assert container["image"] == "registry.example/web:1.0.0"
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, secret_env]
    assert kube.objects[("services", NS, "web")]["spec"]["selector"] == {"app": "web"}
    assert (await target.snapshot("web", NS)).state == snapshot.state
    # restore twice: harmless — recorded, nothing changes
    generation = kube.objects[("deployments", NS, "web")]["metadata"]["generation"]
    twice = await target.restore(snapshot, step_id="d2/rollback")
    assert twice.ok and twice.already_applied
    other = await target.restore(snapshot, step_id="d2/rollback-again")
    assert other.ok and not other.already_applied
    assert kube.objects[("deployments", NS, "web")]["metadata"]["generation"] == generation


async def test_fake_refuses_malformed_requests_like_the_api_server(fake: tuple[KubeFake, str, Path]) -> None:
    _, url, kubeconfig = fake
    assert (await _target(kubeconfig).apply(_step("s1", "1.0.0"))).ok
    path = f"{url}/apis/apps/v1/namespaces/{NS}/deployments/web"
    async with aiohttp.ClientSession() as s:
        async with s.patch(path, data=b"{}", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 415
            assert (await r.json())["reason"] == "UnsupportedMediaType"
        bad = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": ""}]}}}}
        async with s.patch(
            path, json=bad, headers={"Content-Type": "application/strategic-merge-patch+json"}
        ) as r:
            body = await r.json()
            assert r.status == 422 and body["kind"] == "Status" and body["reason"] == "Invalid"
        async with s.patch(path, json={}, headers={"Content-Type": "application/apply-patch+yaml"}) as r:
            assert r.status == 422  # apply needs a fieldManager
        async with s.get(path) as r:
            current = await r.json()
        current["metadata"]["resourceVersion"] = "1"
        async with s.put(path, json=current) as r:
            assert r.status == 409


@pytest.mark.real_cluster  # collected only with SHIPLOG_TEST_KUBECONFIG (tests/conftest.py)
async def test_rolling_on_a_real_cluster() -> None:
    kubeconfig = Path(os.environ["SHIPLOG_TEST_KUBECONFIG"])
    target = _target(kubeconfig)
    step = _step("real-1", "1.25", deployment_id=f"real-{os.getpid()}")
    step = step.model_copy(update={"release": step.release.model_copy(update={"artifact": "nginx:1.25"})})
    result = await target.apply(step)
    assert result.ok, result.error


async def test_apply_after_a_crash_mid_step_converges(fake: tuple[KubeFake, str, Path]) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0"))).ok
    # a driver that patched the Deployment for s2 and crashed before recording the step
    crashed = KubernetesTarget._patch(
        target._placement("web", NS, None), "registry.example/web:1.1.0", [], 3, "1.1.0"
    )
    async with (
        aiohttp.ClientSession() as s,
        s.patch(
            f"{url}/apis/apps/v1/namespaces/{NS}/deployments/web?fieldManager=shiplog",
            data=json.dumps(crashed),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    generation = kube.objects[("deployments", NS, "web")]["metadata"]["generation"]
    result = await target.apply(_step("s2", "1.1.0"))
    assert result.ok and not result.already_applied
    dep = kube.objects[("deployments", NS, "web")]
    assert dep["metadata"]["generation"] == generation  # the re-driven patch changed nothing
    assert dep["status"]["availableReplicas"] == 3


def _canary_step(step_id: str, kind: str, version: str, weight: int | None = None) -> Step:
    step = _step(step_id, version, config={"MODE": version})
    return step.model_copy(update={"kind": kind, "weight": weight, "replicas": 5})


async def test_canary_splits_by_replica_ratio_then_promote_deletes_it(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0").model_copy(update={"replicas": 5}))).ok
    await _service(url, {"app": "web"})
    weighted = await target.apply(_canary_step("c20", "set_weight", "1.1.0", weight=20))
    assert weighted.ok, weighted.error
    assert weighted.detail["split"] == "replica_ratio"
    assert weighted.detail["replicas"] == {"stable": 4, "canary": 1}
    stable = kube.objects[("deployments", NS, "web")]
    canary = kube.objects[("deployments", NS, "web-canary")]
    assert stable["spec"]["replicas"] == 4 and stable["status"]["availableReplicas"] == 4
    assert canary["spec"]["replicas"] == 1 and canary["status"]["availableReplicas"] == 1
    canary_container = canary["spec"]["template"]["spec"]["containers"][0]
    assert canary_container["image"] == "registry.example/web:1.1.0"
    assert canary_container["env"] == [{"name": "MODE", "value": "1.1.0"}]
    assert _container(kube)["image"] == "registry.example/web:1.0.0"
    # one Service selects the pods of both Deployments
    selector = kube.objects[("services", NS, "web")]["spec"]["selector"]
    for dep in (stable, canary):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector.items())
    status = await target.status("web", NS)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.0.0", "stable", 80),
        ("1.1.0", "canary", 20),
    }
    assert target.capabilities.traffic_split
    promoted = await target.apply(_canary_step("p", "promote", "1.1.0"))
    assert promoted.ok, promoted.error
    assert promoted.detail["canary_deleted"] is True
    assert ("deployments", NS, "web-canary") not in kube.objects
    stable = kube.objects[("deployments", NS, "web")]
    assert _container(kube)["image"] == "registry.example/web:1.1.0"
    assert stable["spec"]["replicas"] == 5 and stable["status"]["availableReplicas"] == 5
    assert ("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/web-canary") in {
        (method, path) for method, path, _ in kube.requests
    }
    status = await target.status("web", NS)
    assert [(t.version, t.role, t.weight) for t in status.tracks] == [("1.1.0", "stable", 100)]
    # re-driven after a crash: recorded, the absent canary is not an error
    again = await target.apply(_canary_step("p", "promote", "1.1.0"))
    assert again.ok and again.already_applied


async def test_rollback_mid_canary_restores_exactly_the_snapshot(fake: tuple[KubeFake, str, Path]) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0").model_copy(update={"replicas": 5}))).ok
    await _service(url, {"app": "web"})
    snapshot = await target.snapshot("web", NS)
    assert snapshot.state["canary"] is None
    assert (await target.apply(_canary_step("c20", "set_weight", "1.1.0", weight=20))).ok
    assert (await target.apply(_canary_step("c50", "set_weight", "1.1.0", weight=50))).ok
    assert kube.objects[("deployments", NS, "web-canary")]["spec"]["replicas"] == 2  # round(2.5)
    restored = await target.restore(snapshot, step_id="d1/rollback")
    assert restored.ok, restored.error
    assert ("deployments", NS, "web-canary") not in kube.objects
    stable = kube.objects[("deployments", NS, "web")]
    assert _container(kube)["image"] == "registry.example/web:1.0.0"
    assert stable["spec"]["replicas"] == 5
    assert (await target.snapshot("web", NS)).state == snapshot.state
    # twice: harmless
    assert (await target.restore(snapshot, step_id="d1/rollback")).already_applied
    assert ("deployments", NS, "web-canary") not in kube.objects


async def test_delete_of_a_missing_deployment_is_a_404_status(fake: tuple[KubeFake, str, Path]) -> None:
    _, url, _ = fake
    async with (
        aiohttp.ClientSession() as s,
        s.delete(f"{url}/apis/apps/v1/namespaces/{NS}/deployments/nope") as r,
    ):
        body = await r.json()
        assert r.status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"


async def test_blue_green_steps_are_refused(fake: tuple[KubeFake, str, Path]) -> None:
    _, _, kubeconfig = fake
    with pytest.raises(InvalidInput):
        await _target(kubeconfig).apply(_canary_step("x", "switch", "1.1.0"))
