"""The in-process fast path hands an appended event to exactly the consumers that
read its topic and react to its type."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from consumers.approval import APPROVAL
from consumers.execution import EXECUTION
from consumers.recorder import RECORDER
from consumers.shell import LocalDispatch
from consumers.verification import VERIFICATION
from events import new_event
from events.deployment import PlannedStep
from events.execution import StepApplied, StepStarted


@dataclass
class FakeShell:
    consumer: object
    got: list[str] = field(default_factory=list)

    async def handle_local(self, event) -> None:  # type: ignore[no-untyped-def]
        self.got.append(event.type_name)


def event(data):  # type: ignore[no-untyped-def]
    return new_event(data, source="t", subject="svc.dev.r1", correlationid="r1")


async def test_an_appended_event_goes_only_to_the_consumers_that_want_it() -> None:
    shells = [FakeShell(c) for c in (RECORDER, APPROVAL, EXECUTION, VERIFICATION)]
    dispatch = LocalDispatch(shells)  # type: ignore[arg-type]
    step = PlannedStep(kind="rolling")
    dispatch(
        [
            event(StepStarted(deployment_id="svc.dev.r1", index=0, step_id="s0", step=step)),
            event(StepApplied(deployment_id="svc.dev.r1", index=0, step_id="s0", step=step, ok=True)),
        ]
    )
    await dispatch.drain()
    await asyncio.sleep(0)
    by_name = {s.consumer.name: s.got for s in shells}  # type: ignore[attr-defined]
    assert by_name == {
        "recorder": [],
        "approval": [],
        "execution": ["shiplog.step.started"],
        "verification": ["shiplog.step.started", "shiplog.step.applied"],
    }
