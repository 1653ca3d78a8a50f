"""The build stream family: what CI tells shiplog."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from events.base import EventData


class TestResults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    passed: NonNegativeInt = 0
    failed: NonNegativeInt = 0
    coverage: float | None = Field(default=None, ge=0, le=100)


class SecurityFindings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    critical: NonNegativeInt = 0
    high: NonNegativeInt = 0


class BuildCompleted(EventData):
    """A CI build finished and produced a deployable artifact.

    Unknown extra fields are kept, not rejected: CI systems add their own.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    TYPE: ClassVar[str] = "shiplog.build.completed"
    VERSION: ClassVar[int] = 1

    service: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(min_length=1)
    artifact: str = Field(min_length=1)
    digest: str | None = Field(default=None, pattern=r"^[a-z0-9]+:[A-Fa-f0-9]+$")
    commit: str | None = None
    branch: str | None = None
    author: str | None = None
    pipeline: str = "default"
    tests: TestResults | None = None
    security: SecurityFindings | None = None
