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

from adapters.targets import Release, Snapshot, Step, create_target
from adapters.targets.kubernetes import KubernetesTarget, KubernetesTargetConfig, bluegreen, route
from events.errors import AdapterRejected, InvalidInput
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
    assert weighted.detail["split"] == "replicas"
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
    assert snapshot.state["deployments"]["web-canary"] is None
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


# -- blue-green ------------------------------------------------------------------------

COLOUR = "shiplog.io/colour"


def _bg_step(step_id: str, kind: str, version: str, **settings: Any) -> Step:
    step = _step(step_id, version, deployment_id=f"d-{version}", **settings)
    return step.model_copy(update={"kind": kind})


def _selector(kube: KubeFake, name: str) -> dict[str, str]:
    return dict(kube.objects[("services", NS, name)]["spec"]["selector"])


def _replicas(kube: KubeFake, name: str) -> tuple[int, int]:
    dep = kube.objects[("deployments", NS, name)]
    return dep["spec"]["replicas"], dep["status"].get("availableReplicas", 0)


async def test_blue_green_previews_switches_scales_down_and_restores(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0"))).ok
    await _service(url, {"app": "web"})
    snapshot = await target.snapshot("web", NS)

    preview = await target.apply(_bg_step("pv", "preview", "1.1.0", scale_down_delay_seconds=0.5))
    assert preview.ok, preview.error
    assert preview.detail["colour"] == "blue" and preview.detail["deployment"] == "web-blue"
    assert _replicas(kube, "web-blue") == (3, 3)
    blue = kube.objects[("deployments", NS, "web-blue")]["spec"]["template"]
    assert blue["spec"]["containers"][0]["image"] == "registry.example/web:1.1.0"
    assert blue["spec"]["containers"][0]["ports"] == [{"containerPort": 8080}]  # from the active one
    assert _selector(kube, "web-preview") == {"shiplog.io/service": "web", COLOUR: "blue"}
    # the preview pods are not behind the active Service: it still serves only 1.0.0
    assert _selector(kube, "web") == {"app": "web"}
    assert "app" not in blue["metadata"]["labels"]
    status = await target.status("web", NS)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.0.0", "stable", 100),
        ("1.1.0", "preview", 0),
    }
    with pytest.raises(AdapterRejected):  # nothing stops before the switch
        await target.apply(_bg_step("sd-early", "scale_down", "1.1.0"))

    switched = await target.apply(_bg_step("sw", "switch", "1.1.0", scale_down_delay_seconds=0.5))
    assert switched.ok, switched.error
    assert _selector(kube, "web") == {"shiplog.io/service": "web", COLOUR: "blue"}
    assert _replicas(kube, "web") == (3, 3)  # the old colour keeps running until scale_down
    status = await target.status("web", NS)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.1.0", "active", 100),
        ("1.0.0", "preview", 0),
    }

    scaled = await target.apply(_bg_step("sd", "scale_down", "1.1.0", scale_down_delay_seconds=0.5))
    assert scaled.ok, scaled.error
    assert 0 < scaled.detail["waited_seconds"] <= 0.5  # the rest of the delay after the switch
    assert scaled.detail["scaled_down"] == ["web"]
    assert _replicas(kube, "web") == (0, 0) and _replicas(kube, "web-blue") == (3, 3)
    status = await target.status("web", NS)
    assert [(t.version, t.role, t.weight) for t in status.tracks] == [("1.1.0", "active", 100)]

    # the next release goes to the other colour, and a rolling update to the active one
    for kind in ("preview", "switch", "scale_down"):
        assert (await target.apply(_bg_step(kind, kind, "1.2.0", scale_down_delay_seconds=0))).ok
    assert _selector(kube, "web") == {"shiplog.io/service": "web", COLOUR: "green"}
    assert _replicas(kube, "web-blue") == (0, 0) and _replicas(kube, "web-green") == (3, 3)
    assert (await target.apply(_step("r", "1.2.1", deployment_id="d-1.2.1"))).ok
    assert (
        kube.objects[("deployments", NS, "web-green")]["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/version"
        ]
        == "1.2.1"
    )

    # a replica-ratio canary of the active colour sits behind the colour's selector
    weighted = await target.apply(_canary_step("c", "set_weight", "1.3.0", weight=40))
    assert weighted.ok and weighted.detail["service_selector"] == _selector(kube, "web")
    canary_labels = kube.objects[("deployments", NS, "web-canary")]["spec"]["template"]["metadata"]["labels"]
    assert all(canary_labels.get(k) == v for k, v in _selector(kube, "web").items())
    status = await target.status("web", NS)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.2.1", "active", 60),
        ("1.3.0", "canary", 40),
    }

    restored = await target.restore(snapshot, step_id="d-1.2.1/rollback")
    assert restored.ok, restored.error
    assert _selector(kube, "web") == {"app": "web"}
    assert _replicas(kube, "web") == (3, 3) and _container(kube)["image"] == "registry.example/web:1.0.0"
    assert not {"web-blue", "web-green", "web-preview", "web-canary"} & {name for _, _, name in kube.objects}
    assert sorted(restored.detail["deleted"]) == [
        "deployment/web-blue",
        "deployment/web-canary",
        "deployment/web-green",
        "service/web-preview",
    ]
    assert (await target.snapshot("web", NS)).state == snapshot.state


# -- canary by Gateway API route ---------------------------------------------------------

ROUTES = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"


async def _route(url: str, rules: list[dict[str, Any]]) -> None:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules},
    }
    async with aiohttp.ClientSession() as s, s.post(url + ROUTES, json=body) as r:
        assert r.status == 201, await r.text()


def _backends(kube: KubeFake) -> list[list[dict[str, Any]]]:
    rules = kube.objects[("httproutes", NS, "web")]["spec"]["rules"]
    return [rule["backendRefs"] for rule in rules]


RULES: list[dict[str, Any]] = [
    {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"name": "web", "port": 80}],
    },
    {"backendRefs": [{"name": "other", "port": 80}]},  # another service's rule: left alone
]


def _gw_step(step_id: str, kind: str, version: str, weight: int | None = None) -> Step:
    step = _step(step_id, version, deployment_id=f"d-{version}", route={"name": "web"})
    return step.model_copy(update={"kind": kind, "weight": weight, "replicas": 4})


async def test_canary_by_route_weights_then_promote_puts_stable_at_100(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_gw_step("s1", "rolling", "1.0.0"))).ok
    await _service(url, {"app": "web"})
    await _route(url, RULES)

    weighted = await target.apply(_gw_step("c25", "set_weight", "1.1.0", weight=25))
    assert weighted.ok, weighted.error
    assert weighted.detail["split"] == "gateway"
    assert weighted.detail["weights"] == {"stable": 75, "canary": 25}
    assert _backends(kube) == [
        [{"name": "web", "port": 80, "weight": 75}, {"name": "web-canary", "weight": 25, "port": 80}],
        [{"name": "other", "port": 80}],
    ]
    # the canary Service reaches the canary's pods only, the stable one only the stable's
    canary_labels = kube.objects[("deployments", NS, "web-canary")]["spec"]["template"]["metadata"]["labels"]
    stable_labels = kube.objects[("deployments", NS, "web")]["spec"]["template"]["metadata"]["labels"]
    canary_selector, stable_selector = _selector(kube, "web-canary"), _selector(kube, "web")
    assert all(canary_labels.get(k) == v for k, v in canary_selector.items())
    assert not all(stable_labels.get(k) == v for k, v in canary_selector.items())
    assert not all(canary_labels.get(k) == v for k, v in stable_selector.items())
    assert _replicas(kube, "web") == (4, 4) and _replicas(kube, "web-canary") == (1, 1)
    assert ("PUT", f"{ROUTES}/web") in {(m, p) for m, p, _ in kube.requests}
    status = await target.status("web", NS)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.0.0", "stable", 75),
        ("1.1.0", "canary", 25),
    }

    promoted = await target.apply(_gw_step("p", "promote", "1.1.0"))
    assert promoted.ok, promoted.error
    assert promoted.detail["split"] == "gateway" and promoted.detail["canary_deleted"] is True
    assert _backends(kube) == [[{"name": "web", "port": 80, "weight": 100}], [{"name": "other", "port": 80}]]
    assert ("deployments", NS, "web-canary") not in kube.objects
    assert ("services", NS, "web-canary") not in kube.objects
    assert _container(kube)["image"] == "registry.example/web:1.1.0" and _replicas(kube, "web") == (4, 4)
    status = await target.status("web", NS)
    assert [(t.version, t.role, t.weight) for t in status.tracks] == [("1.1.0", "stable", 100)]


async def test_restore_mid_gateway_canary_puts_back_route_weights_and_selectors(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_gw_step("s1", "rolling", "1.0.0"))).ok
    await _service(url, {"app": "web"})
    await _route(url, RULES)
    snapshot = await target.snapshot("web", NS)
    assert snapshot.state["route"]["backendRefs"] == [
        [{"name": "web", "port": 80}],
        [{"name": "other", "port": 80}],
    ]
    assert (await target.apply(_gw_step("c25", "set_weight", "1.1.0", weight=25))).ok
    async with (
        aiohttp.ClientSession() as s,
        s.patch(
            f"{url}/api/v1/namespaces/{NS}/services/web",
            data=json.dumps({"spec": {"selector": {"app": "elsewhere"}}}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as r,
    ):
        assert r.status == 200

    restored = await target.restore(snapshot, step_id="d-1.1.0/rollback")
    assert restored.ok, restored.error
    assert _backends(kube) == [[{"name": "web", "port": 80}], [{"name": "other", "port": 80}]]
    assert _selector(kube, "web") == {"app": "web"}
    assert ("deployments", NS, "web-canary") not in kube.objects
    assert ("services", NS, "web-canary") not in kube.objects
    assert (await target.snapshot("web", NS)).state == snapshot.state
    assert (await target.restore(snapshot, step_id="d-1.1.0/rollback")).already_applied


async def test_a_route_that_does_not_reference_the_stable_service_is_refused(
    fake: tuple[KubeFake, str, Path],
) -> None:
    _, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_gw_step("s1", "rolling", "1.0.0"))).ok
    await _service(url, {"app": "web"})
    await _route(url, [{"backendRefs": [{"name": "other", "port": 80}]}])
    with pytest.raises(AdapterRejected, match="references Service 'web'"):
        await target.apply(_gw_step("c25", "set_weight", "1.1.0", weight=25))


async def test_fake_refuses_malformed_routes_like_the_api_server(fake: tuple[KubeFake, str, Path]) -> None:
    _, url, _ = fake
    await _route(url, RULES)
    path = f"{url}{ROUTES}/web"
    async with aiohttp.ClientSession() as s:
        async with s.get(path) as r:
            current = await r.json()
        for bad_ref in (
            {"name": "web"},  # a Service backendRef needs a port
            {"name": "web", "port": 80, "weight": -1},
            {"name": "web", "port": 80, "wieght": 5},  # unknown field
        ):
            body = json.loads(json.dumps(current))
            body["spec"]["rules"][0]["backendRefs"] = [bad_ref]
            async with s.put(path, json=body) as r:
                assert r.status == 422, bad_ref
                assert (await r.json())["reason"] == "Invalid"
        async with s.put(path, json={**current, "metadata": {"name": "web"}}) as r:
            assert r.status == 422  # a replace needs the resourceVersion
        # a custom resource has no strategic-merge patch; a JSON patch is a list
        smp = {"Content-Type": "application/strategic-merge-patch+json"}
        async with s.patch(path, data=b"{}", headers=smp) as r:
            assert r.status == 415
        async with s.patch(path, data=b"{}", headers={"Content-Type": "application/json-patch+json"}) as r:
            assert r.status == 400
        ops = [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 7}]
        async with s.patch(path, json=ops, headers={"Content-Type": "application/json-patch+json"}) as r:
            assert r.status == 422  # replace of a member that is not there
        ops[0]["op"] = "add"
        async with s.patch(path, json=ops, headers={"Content-Type": "application/json-patch+json"}) as r:
            assert r.status == 200 and (await r.json())["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"selector": {}}}
        async with s.post(f"{url}/api/v1/namespaces/{NS}/services", json=service) as r:
            assert r.status == 422  # a Service needs ports


# -- snapshots ---------------------------------------------------------------------------


async def test_restoring_an_empty_snapshot_removes_what_the_deployment_created(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, _, kubeconfig = fake
    target = _target(kubeconfig)
    empty = await target.snapshot("web", NS)
    assert empty.version is None and set(empty.state["deployments"].values()) == {None}
    assert (await target.apply(_step("s1", "1.0.0"))).ok
    for kind in ("preview", "switch"):
        assert (await target.apply(_bg_step(kind, kind, "1.1.0"))).ok
    restored = await target.restore(empty, step_id="d1/rollback")
    assert restored.ok, restored.error
    assert sorted(restored.detail["deleted"]) == [
        "deployment/web",
        "deployment/web-blue",
        "service/web",
        "service/web-preview",
    ]
    assert not [key for key in kube.objects if key[1] == NS]
    again = await target.restore(empty, step_id="d1/rollback")
    assert again.ok and again.detail["deleted"] == []


async def test_a_format_1_snapshot_still_restores(fake: tuple[KubeFake, str, Path]) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0").model_copy(update={"replicas": 5}))).ok
    await _service(url, {"app": "web"})
    state = {
        "format": 1,
        "namespace": NS,
        "deployment": "web",
        "container": "web",
        "image": "registry.example/web:0.9.0",
        "env": [{"name": "A", "value": "1"}],
        "replicas": 2,
        "version": "0.9.0",
        "services": {"web": {"app": "web"}},
        "canary": None,
    }
    assert (await target.apply(_canary_step("c20", "set_weight", "1.1.0", weight=20))).ok
    snapshot = Snapshot(service="web", environment=NS, version="0.9.0", state=state)
    restored = await target.restore(snapshot, step_id="d1/rollback")
    assert restored.ok, restored.error
    assert _container(kube)["image"] == "registry.example/web:0.9.0"
    assert _container(kube)["env"] == [{"name": "A", "value": "1"}]
    assert _replicas(kube, "web") == (2, 2)
    assert ("deployments", NS, "web-canary") not in kube.objects


async def test_a_preview_past_its_deadline_fails_is_not_switched_to_and_rolls_back(
    fake: tuple[KubeFake, str, Path],
) -> None:
    kube, url, kubeconfig = fake
    target = _target(kubeconfig)
    assert (await target.apply(_step("s1", "1.0.0"))).ok
    await _service(url, {"app": "web"})
    snapshot = await target.snapshot("web", NS)
    kube.never_available.add("registry.example/web:1.1.0")
    preview = await target.apply(_bg_step("pv", "preview", "1.1.0", progress_deadline_seconds=1))
    assert not preview.ok and (preview.error or "").startswith("ProgressDeadlineExceeded")
    switched = await target.apply(_bg_step("sw", "switch", "1.1.0"))
    assert not switched.ok and (switched.error or "").startswith("ProgressDeadlineExceeded")
    assert _selector(kube, "web") == {"app": "web"}  # no traffic went to it
    restored = await target.restore(snapshot, step_id="d-1.1.0/rollback")
    assert restored.ok, restored.error
    assert sorted(restored.detail["deleted"]) == ["deployment/web-blue", "service/web-preview"]
    assert _replicas(kube, "web") == (3, 3)


# -- the pure parts ----------------------------------------------------------------------

WEB = route.Backends(stable="web", canary="web-canary", route_namespace=NS, namespace=NS)


@pytest.mark.parametrize(
    ("refs", "backends", "weight", "expected"),
    [
        # an unweighted stable ref gets explicit weights and a canary beside it, same port
        (
            [{"name": "web", "port": 80}],
            WEB,
            10,
            [{"name": "web", "port": 80, "weight": 90}, {"name": "web-canary", "weight": 10, "port": 80}],
        ),
        # a canary ref already there is updated, not doubled
        (
            [{"name": "web", "port": 80, "weight": 90}, {"name": "web-canary", "port": 80, "weight": 10}],
            WEB,
            50,
            [{"name": "web", "port": 80, "weight": 50}, {"name": "web-canary", "weight": 50, "port": 80}],
        ),
        # promote: 100 on stable, the canary's ref gone, other backends kept
        (
            [
                {"name": "web", "port": 80, "weight": 50},
                {"name": "web-canary", "port": 80, "weight": 50},
                {"name": "x", "port": 1},
            ],
            WEB,
            None,
            [{"name": "web", "port": 80, "weight": 100}, {"name": "x", "port": 1}],
        ),
        # a route in another namespace names the Services' namespace; so does the canary's ref
        (
            [{"name": "web", "namespace": NS, "port": 80}],
            route.Backends("web", "web-canary", "gateways", NS),
            25,
            [
                {"name": "web", "namespace": NS, "port": 80, "weight": 75},
                {"name": "web-canary", "weight": 25, "namespace": NS, "port": 80},
            ],
        ),
    ],
)
def test_route_weights_are_set_on_the_rules_that_reference_stable(
    refs: list[dict[str, Any]], backends: route.Backends, weight: int | None, expected: list[dict[str, Any]]
) -> None:
    rules = [{"backendRefs": refs}, {"backendRefs": [{"name": "web", "namespace": "elsewhere", "port": 80}]}]
    out = route.set_weights(rules, backends, weight)
    assert out[0]["backendRefs"] == expected
    assert out[1] == rules[1]  # a Service of the same name in another namespace is not ours
    assert route.weights(out, backends) == (100 - (weight or 0), weight or 0)


@pytest.mark.parametrize(
    ("switched_at", "delay", "expected"),
    [(None, 5.0, 5.0), ("garbage", 5.0, 5.0), ("100", 5.0, 3.0), ("90", 5.0, 0.0), ("100", 0.0, 0.0)],
)
def test_scale_down_waits_the_rest_of_the_delay_after_the_switch(
    switched_at: str | None, delay: float, expected: float
) -> None:
    assert bluegreen.scale_down_wait(switched_at, delay, now=102.0) == expected


# -- placement after a restart -----------------------------------------------------------

PLACED = {"namespace": "team-a", "deployment": "web-api", "container": "app"}


def _bare() -> KubernetesTarget:
    """A new instance (a restart) whose config names no cluster: the settings must."""
    return KubernetesTarget(KubernetesTargetConfig(rollout_timeout=20))


async def test_a_new_instance_snapshots_and_reads_status_where_the_settings_place_the_service(
    fake: tuple[KubeFake, str, Path],
) -> None:
    """After a restart no apply is remembered: the settings alone say the service lives
    on this cluster in namespace team-a as Deployment web-api, so the snapshot is not of
    an empty ``staging`` — and restoring it after 1.1.0, by yet another new instance,
    brings 1.0.0 back there, deleting nothing."""
    kube, _, kubeconfig = fake
    placed = {**PLACED, "kubeconfig": str(kubeconfig)}
    assert (await _bare().apply(_step("s1", "1.0.0", **placed))).ok
    settings = {"port": 8080, **placed}

    restarted = _bare()
    snapshot = await restarted.snapshot("web", NS, settings)
    assert snapshot.version == "1.0.0"
    assert (snapshot.state["namespace"], snapshot.state["deployment"]) == ("team-a", "web-api")
    assert snapshot.state["deployments"]["web-api"] is not None
    status = await restarted.status("web", NS, settings)
    assert status.reachable and [(t.version, t.role) for t in status.tracks] == [("1.0.0", "stable")]
    # without settings a new instance looks at the defaults: nothing there
    assert (await _target(kubeconfig).snapshot("web", NS)).version is None

    assert (await _bare().apply(_step("s2", "1.1.0", **placed))).ok
    restored = await _bare().restore(snapshot, step_id="d1/rollback")
    assert restored.ok and restored.detail["deleted"] == [], restored
    dep = kube.objects[("deployments", "team-a", "web-api")]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1.0.0"


async def test_snapshot_and_status_refuse_invalid_settings_as_apply_does(
    fake: tuple[KubeFake, str, Path],
) -> None:
    _, _, kubeconfig = fake
    target = _target(kubeconfig)
    bad = {"port": "not a port"}
    with pytest.raises(InvalidInput):
        await target.apply(_step("s1", "1.0.0", **bad))
    with pytest.raises(InvalidInput):
        await target.snapshot("web", NS, bad)
    with pytest.raises(InvalidInput):
        await target.status("web", NS, bad)
