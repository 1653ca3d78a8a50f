"""The pool's wrapper (shiplog/targets.py ``SecretsResolved``): the target gets its
settings with secret references resolved; what comes back — a snapshot for the log,
a result, a status — never holds the value: a snapshot keeps the reference (and
restore resolves it again), anything else reads ``***``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from adapters.targets import Capabilities, Release, Snapshot, Step, StepResult, TargetStatus, Track
from shiplog.targets import SecretsResolved

SECRET = "postgresql://app:s3cret@db/shop"
REF = {"secret": {"env": "SHOP_DB"}}


class Echo:
    """A target that records what it was given and repeats it back, as careless
    targets do (an SSH snapshot dumps its settings; an error quotes a command)."""

    TYPE = "echo"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        self.seen.append(settings)
        return Snapshot(
            service=service, environment=environment, version="1", state={"settings": dict(settings or {})}
        )

    async def apply(self, step: Step) -> StepResult:
        self.seen.append(step.release.settings)
        url = step.release.settings["database_url"]
        return StepResult(step_id=step.step_id, ok=False, error=f"psql {url} failed", detail={"url": url})

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        url = (settings or {}).get("database_url", "")
        return TargetStatus(
            service=service,
            environment=environment,
            reachable=True,
            tracks=[Track(version="1", role="stable", weight=100, urls=[f"{url}/x"])],
        )

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        self.seen.append(snapshot.state)
        return StepResult(step_id=step_id, ok=True)


async def test_the_target_gets_values_and_nothing_it_answers_holds_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_DB", SECRET)
    echo = Echo()
    target = SecretsResolved(echo, None)  # type: ignore[arg-type]
    settings = {"database_url": REF, "migrations": "m/"}

    snapshot = await target.snapshot("shop", "prod", settings)
    result = await target.apply(
        Step(
            step_id="s",
            deployment_id="d",
            kind="rolling",
            release=Release(service="shop", environment="prod", version="2", artifact="a", settings=settings),
        )
    )
    status = await target.status("shop", "prod", settings)
    restored = await target.restore(snapshot, step_id="r", settings=settings)

    assert echo.seen[0]["database_url"] == SECRET and echo.seen[1]["database_url"] == SECRET
    assert snapshot.state["settings"]["database_url"] == REF  # the log keeps the reference
    assert echo.seen[2]["settings"]["database_url"] == SECRET  # ...and restore gets the value back
    assert result.error == "psql *** failed" and result.detail == {"url": "***"}
    assert status.tracks[0].urls == ["***/x"]
    for answer in (snapshot, result, status, restored):
        assert SECRET not in json.dumps(answer.model_dump(mode="json"))
