"""The SSH target against real sshd servers: three "hosts" on free ports, each
with its own releases root, reached with asyncssh and pinned host keys."""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.targets import Release, Step, create_target
from adapters.targets.ssh import SshTarget, SshTargetConfig
from events.errors import InvalidInput
from tests.sshd import (
    SshdCluster,
    free_port,
    served,
    slotted_artifact,
    slotted_settings,
    stop_services,
    version_at,
)

ENV = "production"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    hosts = SshdCluster(tmp_path_factory.mktemp("sshd"), 3)
    try:
        hosts.start()
        yield hosts
    finally:
        hosts.stop()


@pytest.fixture
def ssh(cluster: SshdCluster) -> SshdCluster:
    for host in cluster.hosts:  # a test that stopped a host may have failed before restarting it
        if host.proc is None:
            host.start()
    return cluster


@pytest.fixture
def service() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}"


def artifact(dir: Path, version: str) -> Path:
    """A tarball with a ``run.sh`` whose ``restart`` appends its version to a log."""
    script = f'#!/bin/sh\necho "{version} $1" >> "$2"\n'.encode()
    path = dir / f"app-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return path


def settings(ssh: SshdCluster, **extra: Any) -> dict[str, Any]:
    return {
        "root": "/nonexistent-default-root",
        "hosts": ssh.inventory(),
        "restart": "{root}/{service}/current/run.sh restart {root}/{service}/restarts.log",
        "health_command": "test -x {root}/{service}/current/run.sh",
        "batch_size": 1,
        **extra,
    }


def step(service: str, version: str, art: Path, step_id: str, cfg: dict[str, Any]) -> Step:
    release = Release(service=service, environment=ENV, version=version, artifact=str(art), settings=cfg)
    return Step(step_id=step_id, deployment_id=f"d-{version}", kind="rolling", release=release)


def current(ssh: SshdCluster, service: str) -> list[str | None]:
    links = [h.root / service / "current" for h in ssh.hosts]
    return [Path(str(link.readlink())).name if link.is_symlink() else None for link in links]


def restarts(ssh: SshdCluster, service: str) -> list[list[str]]:
    logs = [h.root / service / "restarts.log" for h in ssh.hosts]
    return [log.read_text().split("\n")[:-1] if log.exists() else [] for log in logs]


@pytest.fixture
def target(tmp_path: Path) -> SshTarget:
    made = create_target("ssh", {"state_dir": str(tmp_path / "state"), "health_interval": 0.05})
    assert isinstance(made, SshTarget)
    return made


async def test_rolling_two_versions_across_three_hosts(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path
) -> None:
    v1, v2 = artifact(tmp_path, "1.0.0"), artifact(tmp_path, "2.0.0")
    digest = hashlib.sha256(v1.read_bytes()).hexdigest()
    first = await target.apply(
        step(service, "1.0.0", v1, "roll", settings(ssh, artifact_sha256=f"sha256:{digest}"))
    )
    assert first.ok, first.error
    assert first.detail["hosts"] == ["h1", "h2", "h3"]
    assert current(ssh, service) == ["1.0.0"] * 3

    second = await target.apply(step(service, "2.0.0", v2, "roll", settings(ssh)))
    assert second.ok, second.error
    assert current(ssh, service) == ["2.0.0"] * 3
    assert restarts(ssh, service) == [["1.0.0 restart", "2.0.0 restart"]] * 3
    for host in ssh.hosts:  # the switch left no temp link behind
        assert sorted(p.name for p in (host.root / service).iterdir()) == [
            "current",
            "releases",
            "restarts.log",
        ]

    again = await target.apply(step(service, "2.0.0", v2, "roll", settings(ssh)))
    assert again.ok and again.already_applied
    assert restarts(ssh, service) == [["1.0.0 restart", "2.0.0 restart"]] * 3

    status = await target.status(service, ENV)
    assert status.reachable
    assert [(t.version, t.weight) for t in status.tracks] == [("2.0.0", 100)]


async def test_a_new_target_with_the_same_step_converges(
    ssh: SshdCluster, service: str, tmp_path: Path
) -> None:
    """A step re-driven after a crash lost the record: applying it again converges."""
    art = artifact(tmp_path, "1.0.0")
    for n in range(2):
        fresh = SshTarget(SshTargetConfig(state_dir=tmp_path / f"state{n}"))
        result = await fresh.apply(step(service, "1.0.0", art, "roll", settings(ssh)))
        assert result.ok and not result.already_applied, result.error
    assert current(ssh, service) == ["1.0.0"] * 3


async def test_digest_mismatch_is_refused_before_any_change(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path
) -> None:
    art = artifact(tmp_path, "1.0.0")
    result = await target.apply(step(service, "1.0.0", art, "roll", settings(ssh, artifact_sha256="0" * 64)))
    assert not result.ok
    assert result.error is not None and "digest mismatch" in result.error
    assert all(not (h.root / service).exists() for h in ssh.hosts)


async def test_snapshot_deploy_restore_and_restore_twice(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path
) -> None:
    ok = await target.apply(step(service, "1.0.0", artifact(tmp_path, "1.0.0"), "roll", settings(ssh)))
    assert ok.ok, ok.error
    snap = await target.snapshot(service, ENV)
    assert snap.version == "1.0.0"
    assert "key" not in str(snap.state.get("current"))

    deployed = await target.apply(step(service, "2.0.0", artifact(tmp_path, "2.0.0"), "roll", settings(ssh)))
    assert deployed.ok, deployed.error
    assert current(ssh, service) == ["2.0.0"] * 3

    restored = await target.restore(snap, step_id="restore-d-2.0.0")
    assert restored.ok, restored.error
    assert current(ssh, service) == ["1.0.0"] * 3
    assert [log[-1] for log in restarts(ssh, service)] == ["1.0.0 restart"] * 3

    twice = await target.restore(snap, step_id="restore-d-2.0.0")
    assert twice.ok and twice.already_applied
    other = SshTarget(SshTargetConfig(state_dir=tmp_path / "other-state"))
    converged = await other.restore(snap, step_id="restore-d-2.0.0")
    assert converged.ok and converged.detail["restored"] == []
    assert current(ssh, service) == ["1.0.0"] * 3
    assert [len(log) for log in restarts(ssh, service)] == [3] * 3


async def test_a_host_down_mid_rolling_stops_and_rolls_back_the_hosts_switched(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path
) -> None:
    ok = await target.apply(step(service, "1.0.0", artifact(tmp_path, "1.0.0"), "roll", settings(ssh)))
    assert ok.ok, ok.error
    snap = await target.snapshot(service, ENV)

    ssh.hosts[2].stop()  # h3 goes down before its batch
    try:
        failed = await target.apply(
            step(service, "2.0.0", artifact(tmp_path, "2.0.0"), "roll", settings(ssh, max_unavailable=1))
        )
        assert not failed.ok
        assert failed.error is not None and "h3" in failed.error
        assert failed.detail == {
            "failed_hosts": ["h3"],
            "switched": ["h1", "h2"],
            "rolled_back": ["h1", "h2"],
            "rollback_failed": [],
        }
        assert current(ssh, service) == ["1.0.0"] * 3
        assert [log[-2:] for log in restarts(ssh, service)[:2]] == [["2.0.0 restart", "1.0.0 restart"]] * 2
        assert not (await target.status(service, ENV)).reachable
    finally:
        ssh.hosts[2].start()

    restored = await target.restore(snap, step_id="restore-d-2.0.0")  # the saga's rollback: nothing left
    assert restored.ok and restored.detail["restored"] == [], restored
    retried = await target.apply(step(service, "2.0.0", artifact(tmp_path, "2.0.0"), "roll", settings(ssh)))
    assert retried.ok and not retried.already_applied, retried.error  # a failed step is not recorded
    assert current(ssh, service) == ["2.0.0"] * 3


# -- two slots (blue-green) ----------------------------------------------------------


@pytest.fixture
def ports() -> tuple[int, int]:
    blue = free_port()
    return blue, next(p for p in iter(free_port, None) if p != blue)


def slotted_step(
    service: str, kind: str, version: str, tmp_path: Path, cfg: dict[str, Any], step_id: str | None = None
) -> Step:
    release = Release(
        service=service,
        environment=ENV,
        version=version,
        artifact=str(slotted_artifact(tmp_path, version)),
        settings=cfg,
    )
    return Step(step_id=step_id or kind, deployment_id=f"d-{version}", kind=kind, release=release)  # type: ignore[arg-type]


def slots_of(ssh: SshdCluster, service: str) -> list[str | None]:
    links = [h.root / service / "current" for h in ssh.hosts]
    return [link.readlink().name if link.is_symlink() else None for link in links]


async def test_blue_green_on_two_hosts_previews_switches_and_scales_down(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path, ports: tuple[int, int]
) -> None:
    cfg = slotted_settings(ssh, ports, hosts=ssh.inventory()[:2])
    two = [h.address for h in ssh.hosts[:2]]
    blue, green = ports
    try:
        first = await target.apply(slotted_step(service, "rolling", "1.0.0", tmp_path, cfg))
        assert first.ok, first.error
        assert (await served(ssh, service))[:2] == ["1.0.0"] * 2
        assert slots_of(ssh, service)[:2] == ["blue"] * 2

        preview = await target.apply(slotted_step(service, "preview", "2.0.0", tmp_path, cfg))
        assert preview.ok and preview.detail["slots"] == {"h1": "green", "h2": "green"}, preview
        assert [await version_at(a, green) for a in two] == ["2.0.0"] * 2  # the preview answers...
        assert (await served(ssh, service))[:2] == ["1.0.0"] * 2  # ...and takes no traffic
        status = await target.status(service, ENV)
        assert [(t.version, t.role, t.weight) for t in status.tracks] == [
            ("1.0.0", "active", 100),
            ("2.0.0", "preview", 0),
        ]
        assert status.tracks[1].urls == [f"http://{a}:{green}/" for a in two]

        early = await target.apply(slotted_step(service, "scale_down", "2.0.0", tmp_path, cfg, "early"))
        assert not early.ok and "not the active slot" in str(early.error)  # would stop what serves
        assert [await version_at(a, blue) for a in two] == ["1.0.0"] * 2

        switch = await target.apply(slotted_step(service, "switch", "2.0.0", tmp_path, cfg))
        assert switch.ok and switch.detail["switched"] == ["h1", "h2"], switch
        assert (await served(ssh, service))[:2] == ["2.0.0"] * 2
        assert slots_of(ssh, service)[:2] == ["green"] * 2
        assert [await version_at(a, blue) for a in two] == ["1.0.0"] * 2  # old colour idle, still up

        down = await target.apply(slotted_step(service, "scale_down", "2.0.0", tmp_path, cfg))
        assert down.ok and down.detail["stopped"] == {"h1": "blue", "h2": "blue"}, down
        assert [await version_at(a, blue) for a in two] == [None] * 2
        assert (await served(ssh, service))[:2] == ["2.0.0"] * 2
        status = await target.status(service, ENV)
        assert [(t.version, t.role, t.weight) for t in status.tracks] == [("2.0.0", "active", 100)]
        assert (
            restarts(ssh, service)[:2]
            == [["1.0.0 restart blue", "2.0.0 restart green", "1.0.0 stop blue"]] * 2
        )
        assert not (ssh.hosts[2].root / service).exists()
    finally:
        stop_services(ssh, service)


async def test_restore_with_a_host_down_restores_the_others_fails_and_converges_later(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path, ports: tuple[int, int]
) -> None:
    cfg = slotted_settings(ssh, ports)
    try:
        first = await target.apply(slotted_step(service, "rolling", "1.0.0", tmp_path, cfg))
        assert first.ok, first.error
        snap = await target.snapshot(service, ENV)
        for kind in ("preview", "switch", "scale_down"):
            result = await target.apply(slotted_step(service, kind, "2.0.0", tmp_path, cfg))
            assert result.ok, result.error
        assert await served(ssh, service) == ["2.0.0"] * 3

        ssh.hosts[1].stop()  # h2's sshd is down; its service still serves
        try:
            failed = await target.restore(snap, step_id="d-2.0.0:rollback")
            assert not failed.ok and failed.error is not None and "h2" in failed.error
            assert failed.detail == {"restored": ["h1", "h3"], "failed_hosts": ["h2"]}
            assert await served(ssh, service) == ["1.0.0", "2.0.0", "1.0.0"]
            again = await target.restore(snap, step_id="d-2.0.0:rollback")  # not recorded as applied
            assert not again.ok and not again.already_applied
        finally:
            ssh.hosts[1].start()

        converged = await target.restore(snap, step_id="d-2.0.0:rollback")
        assert converged.ok and not converged.already_applied, converged.error
        assert converged.detail["restored"] == ["h2"]
        assert await served(ssh, service) == ["1.0.0"] * 3
        assert [await version_at(h.address, ports[1]) for h in ssh.hosts] == [None] * 3  # green stopped
        twice = await target.restore(snap, step_id="d-2.0.0:rollback")
        assert twice.ok and twice.already_applied
        other = await target.restore(snap, step_id="another")
        assert other.ok and other.detail["restored"] == []
    finally:
        stop_services(ssh, service)


async def test_a_host_unhealthy_mid_rolling_puts_every_host_back_on_its_slot(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path, ports: tuple[int, int]
) -> None:
    """With two slots the new version never served on h3 (its health failed in the
    inactive slot), and h1, h2 go back to blue with green stopped."""
    cfg = slotted_settings(ssh, ports, health_command="test {name} != h3 || test {version} = 1.0.0")
    try:
        first = await target.apply(slotted_step(service, "rolling", "1.0.0", tmp_path, cfg))
        assert first.ok, first.error
        failed = await target.apply(
            slotted_step(service, "rolling", "2.0.0", tmp_path, {**cfg, "health_timeout": 0.3})
        )
        assert not failed.ok and "h3: not healthy" in str(failed.error), failed
        assert failed.detail["rolled_back"] == ["h1", "h2", "h3"]
        assert await served(ssh, service) == ["1.0.0"] * 3
        assert slots_of(ssh, service) == ["blue"] * 3
        assert [await version_at(h.address, ports[1]) for h in ssh.hosts] == [None] * 3
    finally:
        stop_services(ssh, service)


# -- placement after a restart -----------------------------------------------------------


async def test_a_new_target_snapshots_and_reads_status_of_the_hosts_and_root_the_settings_name(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path
) -> None:
    """A new target whose state dir holds no record of the service (no inventory in its
    config either) is told the hosts and root by the settings, and they win over a
    record that names others."""
    ok = await target.apply(step(service, "1.0.0", artifact(tmp_path, "1.0.0"), "roll", settings(ssh)))
    assert ok.ok, ok.error
    restarted = SshTarget(SshTargetConfig(state_dir=tmp_path / "fresh-state", health_interval=0.05))
    with pytest.raises(InvalidInput):  # nothing to go by without them
        await restarted.snapshot(service, ENV)

    snap = await restarted.snapshot(service, ENV, settings(ssh))
    assert snap.version == "1.0.0" and sorted(snap.state["hosts"]) == ["h1", "h2", "h3"]
    status = await restarted.status(service, ENV, settings(ssh))
    assert status.reachable and [(t.version, t.weight) for t in status.tracks] == [("1.0.0", 100)]

    # h1 alone, its root given by the inventory's ``root`` rather than the host's own
    h1 = {k: v for k, v in ssh.inventory()[0].items() if k != "root"}
    only_h1 = settings(ssh, hosts=[h1], root=str(ssh.hosts[0].root))
    for instance in (restarted, target):  # ``target`` remembers all three hosts
        snap = await instance.snapshot(service, ENV, only_h1)
        assert snap.version == "1.0.0" and list(snap.state["hosts"]) == ["h1"]
        assert snap.state["settings"]["root"] == str(ssh.hosts[0].root)
        status = await instance.status(service, ENV, only_h1)
        assert [(t.version, t.weight) for t in status.tracks] == [("1.0.0", 100)]


async def test_snapshot_and_status_refuse_invalid_settings_as_apply_does(
    ssh: SshdCluster, target: SshTarget, service: str, tmp_path: Path
) -> None:
    bad = settings(ssh, root="relative/root")
    with pytest.raises(InvalidInput):
        await target.apply(step(service, "1.0.0", artifact(tmp_path, "1.0.0"), "roll", bad))
    with pytest.raises(InvalidInput):
        await target.snapshot(service, ENV, bad)
    with pytest.raises(InvalidInput):
        await target.status(service, ENV, bad)
