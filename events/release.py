"""Multi-service releases: several services shipped as one saga, in dependency order.

A release of several services starts either from one ``release.manifest`` on
``shiplog.builds`` (CI publishes the whole set), or from the services' own
``build.completed`` events that name the release in their data (``release: {id,
services, depends_on}``) — then the release is composed when the last named service
has built. Every deployment of the release carries the release's id (its
correlation id, and the last part of each deployment id), so the release stream
``release-<id>`` is where its coordination is recorded:

- ``release.composed``: the members, their dependencies and the environments in
  order; or ``release.rejected`` with every reason (a cycle, an unknown dependency,
  a service without a pipeline);
- ``release.member_released``: one service may deploy to one environment now (its
  dependencies there succeeded); planning plans that deployment;
- ``release.member_cancelled``: a service that was waiting on a dependency that
  failed in that environment, never deployed there;
- ``rollback.requested``: a deployed dependant of a service that was rolled back is
  rolled back too (to its own deployment's stream, by the rollback consumer);
- ``release.concluded``: the release's outcome in an environment — ``succeeded``,
  ``partially_rolled_back`` (some services rolled back, the rest kept), or
  ``rolled_back`` / ``failed`` — with which services are in which list. A later
  rollback of a member (a person's) concludes the environment again; the last
  conclusion holds.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.base import EventData
from events.deployment import Reason

RELEASE_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
SERVICE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ReleaseService(BaseModel):
    """One service of a multi-service release: what its build produced, and which
    other services of the release must be deployed (in each environment) before it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(min_length=1, pattern=SERVICE)
    version: str = Field(min_length=1)
    artifact: str = Field(min_length=1)
    digest: str | None = Field(default=None, pattern=r"^[a-z0-9]+:[A-Fa-f0-9]+$")
    pipeline: str = "default"
    depends_on: list[str] = Field(default_factory=list)
    commit: str | None = None
    branch: str | None = None
    author: str | None = None
    #: the build facts gates look at, as on build.completed (tests, security)
    tests: dict[str, Any] | None = None
    security: dict[str, Any] | None = None

    def build_facts(self) -> dict[str, Any]:
        return self.model_dump(
            mode="json", include={"tests", "security", "author", "commit", "branch"}, exclude_none=True
        )


class ReleaseManifest(EventData):
    """CI ships several services as one release."""

    TYPE: ClassVar[str] = "shiplog.release.manifest"
    VERSION: ClassVar[int] = 1

    release_id: str = Field(min_length=1, max_length=100, pattern=RELEASE_ID)
    services: list[ReleaseService] = Field(min_length=1)
    author: str | None = None
    comment: str = ""

    @model_validator(mode="after")
    def _distinct(self) -> ReleaseManifest:
        names = [s.service for s in self.services]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"services listed twice: {', '.join(twice)}")
        return self


class ReleaseMemberBuilt(EventData):
    """A build that belongs to a multi-service release arrived; the release is
    composed when every service it names has built."""

    TYPE: ClassVar[str] = "shiplog.release.member_built"
    VERSION: ClassVar[int] = 1

    release_id: str
    member: ReleaseService
    #: every service of the release, as this build names them
    services: list[str]


class MemberRefused(EventData):
    """A build that names a release but does not fit it (it lists other services than
    the release's first build did): refused alone, the release goes on."""

    TYPE: ClassVar[str] = "shiplog.release.member_refused"
    VERSION: ClassVar[int] = 1

    release_id: str
    service: str
    reason: str


class ReleaseComposed(EventData):
    TYPE: ClassVar[str] = "shiplog.release.composed"
    VERSION: ClassVar[int] = 1

    release_id: str
    services: list[ReleaseService]
    #: every environment of any member's pipeline, in pipeline order
    environments: list[str]
    #: service -> the environments of its own pipeline, in order
    service_environments: dict[str, list[str]]
    #: the dependency order: services in a wave depend only on earlier waves
    waves: list[list[str]]

    def member(self, service: str) -> ReleaseService:
        return next(s for s in self.services if s.service == service)


class ReleaseRejected(EventData):
    TYPE: ClassVar[str] = "shiplog.release.rejected"
    VERSION: ClassVar[int] = 1

    release_id: str
    reasons: list[Reason]


class MemberReleased(EventData):
    """One service of the release may deploy to one environment now."""

    TYPE: ClassVar[str] = "shiplog.release.member_released"
    VERSION: ClassVar[int] = 1

    release_id: str
    service: str
    environment: str
    member: ReleaseService
    #: the environments of the service's pipeline, in order
    environments: list[str]
    #: the services whose success in this environment released it
    after: list[str] = Field(default_factory=list)


class MemberCancelled(EventData):
    TYPE: ClassVar[str] = "shiplog.release.member_cancelled"
    VERSION: ClassVar[int] = 1

    release_id: str
    service: str
    environment: str
    reason: str


class RollbackRequested(EventData):
    """Roll back this deployment because a service it depends on was rolled back
    (subject: the deployment to roll back)."""

    TYPE: ClassVar[str] = "shiplog.rollback.requested"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    release_id: str
    service: str
    environment: str
    reason: str
    #: the service whose rollback this follows
    because_of: str


Outcome = Literal["succeeded", "partially_rolled_back", "rolled_back", "failed"]


class ReleaseConcluded(EventData):
    TYPE: ClassVar[str] = "shiplog.release.concluded"
    VERSION: ClassVar[int] = 1

    release_id: str
    environment: str
    outcome: Outcome
    #: deployed and kept
    kept: list[str] = Field(default_factory=list)
    rolled_back: list[str] = Field(default_factory=list)
    #: never deployed here: a dependency failed first
    cancelled: list[str] = Field(default_factory=list)
    #: failed before changing anything (rejected, denied, failed)
    failed: list[str] = Field(default_factory=list)
    #: whether the release goes on to its next environment
    continues: bool = False
