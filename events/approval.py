"""Approvals: requests, people's answers (commands on shiplog.commands), and the
approval consumer's record of what counted, what was refused and what was voided.

Every approval action is an event with the actor on the envelope and, in the data,
the role used, the comment, the client address and what it was bound to (the plan's
hash and the artifact's digest): the log alone shows who approved what, on what.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from events.base import EventData


class ApprovalRequested(EventData):
    """People are asked to approve one level of a deployment's gate."""

    TYPE: ClassVar[str] = "shiplog.approval.requested"
    VERSION: ClassVar[int] = 2

    deployment_id: str
    service: str
    environment: str
    version: str
    level: str = "default"
    #: position of the level in the policy (0 first)
    level_index: int = 0
    levels: int = 1
    #: roles whose members may approve this level (empty: anyone not excluded)
    roles: list[str] = Field(default_factory=list)
    #: named principals who may approve (besides the roles)
    approvers: list[str] = Field(default_factory=list)
    quorum: int = 1
    #: principals who may not approve (separation of duties: author, trigger)
    excluded: list[str] = Field(default_factory=list)
    plan_hash: str = ""
    digest: str | None = None
    expires_at: datetime | None = None
    remind_at: datetime | None = None
    why: str = ""


class _Answer(EventData):
    """A person's answer to an approval request (the envelope's ``actor`` says who:
    the authenticated principal, set by the API)."""

    deployment_id: str
    comment: str = ""
    #: the role the person acts in (must be one the level names, and theirs)
    role: str | None = None
    #: the roles the authenticated principal holds (the API fills this in)
    roles: list[str] = Field(default_factory=list)
    #: the level the person meant (None: the one open now)
    level: str | None = None
    #: what the person saw: an answer bound to another plan or artifact is refused
    plan_hash: str | None = None
    digest: str | None = None
    client: str | None = None


class ApprovalGranted(_Answer):
    """A person approved."""

    TYPE: ClassVar[str] = "shiplog.approval.granted"
    VERSION: ClassVar[int] = 2


class ApprovalDenied(_Answer):
    """A person denied."""

    TYPE: ClassVar[str] = "shiplog.approval.denied"
    VERSION: ClassVar[int] = 2


class ApprovalRecorded(EventData):
    """One approval that counted towards a level's quorum."""

    TYPE: ClassVar[str] = "shiplog.approval.recorded"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    level: str
    level_index: int
    approver: str
    role: str | None = None
    comment: str = ""
    client: str | None = None
    plan_hash: str
    #: approvals counted at this level so far (this one included), and needed
    count: int
    quorum: int
    #: the id of the command this approval came in
    command_id: str


class ApprovalLevelCompleted(EventData):
    TYPE: ClassVar[str] = "shiplog.approval.level_completed"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    level: str
    level_index: int
    approvers: list[str]


class ApprovalRefused(EventData):
    """An answer that did not count, and why (self-approval, a missing role, a
    second vote, a stale plan, an unknown level, nothing awaiting approval ...)."""

    TYPE: ClassVar[str] = "shiplog.approval.refused"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    actor: str | None = None
    answer: str  # "approve" | "deny"
    reason: str
    role: str | None = None
    client: str | None = None
    command_id: str


class ApprovalVoided(EventData):
    """The plan changed under outstanding approvals: they no longer count."""

    TYPE: ClassVar[str] = "shiplog.approval.voided"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    reason: str
    old_plan_hash: str
    new_plan_hash: str
    #: the approvals that no longer count: "<approver> (<level>)"
    voided: list[str] = Field(default_factory=list)


class ApprovalReminded(EventData):
    """An approval request is about to expire."""

    TYPE: ClassVar[str] = "shiplog.approval.reminded"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    service: str
    environment: str
    version: str
    level: str
    expires_at: datetime


class ApprovalExpired(EventData):
    """An approval request was not completed in time (the deployment ends denied)."""

    TYPE: ClassVar[str] = "shiplog.approval.expired"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    level: str
    expired_at: datetime
