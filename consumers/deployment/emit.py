"""Making a deployment's next event: envelope fields every saga consumer sets alike."""

from __future__ import annotations

from events.base import EventData
from events.deployment import DeploymentPlanned
from events.envelope import CloudEvent
from events.registry import new_event
from events.topics import COMMANDS, topic_for


def emit(plan: DeploymentPlanned, data: EventData, *, source: str, cause: CloudEvent) -> CloudEvent:
    """A deployment event: subject and key the deployment id, correlation the release,
    causation the event it reacts to, and — only on a direct reaction to a person's
    command — that person as the actor."""
    return new_event(
        data,
        source=source,
        subject=plan.deployment_id,
        correlationid=plan.release_id,
        causationid=cause.id,
        actor=cause.actor if topic_for(cause.type) is COMMANDS else None,
    )


def step_id(deployment_id: str, index: int, kind: str) -> str:
    """Deterministic, so a re-driven step carries the id the target already knows."""
    return f"{deployment_id}:{index}:{kind}"
