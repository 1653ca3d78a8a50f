"""Verification: an analysis run's outcome, with every measurement that fed it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.base import EventData

Outcome = Literal["Successful", "Failed", "Inconclusive", "Error"]


class Measurement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    outcome: Outcome
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class _Verified(EventData):
    deployment_id: str
    step_index: int
    outcome: Outcome
    reason: str = ""
    measurements: list[Measurement] = Field(default_factory=list)


class VerificationPassed(_Verified):
    TYPE: ClassVar[str] = "shiplog.verification.passed"
    VERSION: ClassVar[int] = 1


class VerificationFailed(_Verified):
    TYPE: ClassVar[str] = "shiplog.verification.failed"
    VERSION: ClassVar[int] = 1


class VerificationInconclusive(_Verified):
    TYPE: ClassVar[str] = "shiplog.verification.inconclusive"
    VERSION: ClassVar[int] = 1
