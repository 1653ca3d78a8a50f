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
from tests.sshd import SshdCluster

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
    made = create_target("ssh", {"state_dir": str(tmp_path / "state")})
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


async def test_a_host_down_mid_rolling_fails_naming_it_and_switched_hosts_restore(
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
        assert failed.detail == {"failed_hosts": ["h3"], "switched": ["h1", "h2"]}
        assert current(ssh, service) == ["2.0.0", "2.0.0", "1.0.0"]
        assert not (await target.status(service, ENV)).reachable
    finally:
        ssh.hosts[2].start()

    restored = await target.restore(snap, step_id="restore-d-2.0.0")
    assert restored.ok, restored.error
    assert restored.detail["restored"] == ["h1", "h2"]
    assert current(ssh, service) == ["1.0.0"] * 3
    again = await target.restore(snap, step_id="restore-d-2.0.0")
    assert again.ok and again.already_applied
