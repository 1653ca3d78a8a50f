"""What ``gather`` observed, as plain data for the pure ``decide``.

Nothing here is judged yet: a probe's status code, a scrape's counters, an error's
text. ``analysis`` turns them into measurements with outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.verification.prometheus import VersionCounters


@dataclass(frozen=True)
class Probe:
    """One health GET: the status code, or why there was none (timeout, refused)."""

    status: int | None = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class HealthObservation:
    """The probes of one instance URL, in order."""

    url: str
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True)
class ScrapeAttempt:
    """One read of the metrics endpoint: its counters by version, or the error."""

    at_s: float
    counters: dict[str, VersionCounters] | None = None
    error: str | None = None


@dataclass(frozen=True)
class LoadResult:
    """Requests sent through the endpoint; ``failed`` got no answer at all."""

    sent: int = 0
    failed: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Facts:
    """Everything one verification run observed."""

    #: the version being verified (the plan's) and the one serving beside it, if any
    canary: str
    stable: str | None = None
    #: each failed attempt to read the target's status, in order
    status_errors: tuple[str, ...] = ()
    #: tracks, endpoint and metrics URL as the target reported them; None: never read
    status: dict[str, Any] | None = None
    #: one per instance URL of the new version; None: health was not checked
    health: tuple[HealthObservation, ...] | None = None
    #: every scrape in order; the first good one is the baseline. None: not measured
    scrapes: tuple[ScrapeAttempt, ...] | None = None
    #: why metrics could not be measured at all (e.g. no metrics endpoint)
    metrics_unavailable: str | None = None
    load: LoadResult | None = None
