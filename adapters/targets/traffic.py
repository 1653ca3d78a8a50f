"""The traffic block a step asks for, computed from the current one — pure; shared
by the targets that split traffic across revisions (Cloud Run, Azure Container Apps).

A route sends ``percent`` of the requests to one revision and may carry a tag (its
own URL: a Cloud Run tag, an Azure traffic label). Every step is declarative: the
same step on the traffic it produced gives the same traffic again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from events.errors import AdapterRejected, InvalidInput


@dataclass(frozen=True)
class Route:
    revision: str
    percent: int
    tag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def routes_of(state: list[dict[str, Any]]) -> list[Route]:
    return [Route(str(r["revision"]), int(r["percent"]), r.get("tag")) for r in state]


def stable_of(routes: list[Route], new: str) -> str | None:
    """The revision other than ``new`` with the most traffic (the first on a tie)."""
    others = [r for r in routes if r.revision != new and r.percent > 0]
    if not others:
        return None
    return max(others, key=lambda r: r.percent).revision


def plan(
    kind: str,
    routes: list[Route],
    new: str,
    *,
    weight: int | None = None,
    preview_tag: str,
    active_tag: str | None = None,
) -> list[Route]:
    """The routes after a step of ``kind`` bringing revision ``new``."""
    if kind in ("rolling", "promote", "switch"):
        return [Route(new, 100, active_tag if kind == "switch" else None)]
    if kind == "scale_down":
        kept = [r for r in routes if r.revision == new]
        return kept or [Route(new, 100)]
    if kind == "preview":
        others = [
            Route(r.revision, r.percent, None if r.tag == preview_tag else r.tag)
            for r in routes
            if r.revision != new
        ]
        current = sum(r.percent for r in routes if r.revision == new)
        if current:
            raise AdapterRejected(f"revision {new} already serves {current}% of the traffic; no preview")
        return [*others, Route(new, 0, preview_tag)]
    if kind == "set_weight":
        if weight is None:
            raise InvalidInput("set_weight needs a weight")
        stable = stable_of(routes, new)
        tags = {r.revision: r.tag for r in routes}
        if stable is None:
            if weight == 100 and sum(r.percent for r in routes if r.revision == new) == 100:
                # What set_weight 100 produces: the old stable revision is left only by its
                # tag, if it had one; so the same step again is the same traffic.
                kept = [r for r in routes if r.revision != new and r.tag]
                return [Route(new, 100, tags.get(new)), *kept]
            raise AdapterRejected(f"no revision but {new} serves traffic; a canary needs a stable one")
        out = [Route(new, weight, tags.get(new)), Route(stable, 100 - weight, tags.get(stable))]
        return [r for r in out if r.percent > 0 or r.tag]
    raise InvalidInput(f"unknown step kind {kind!r}")


def serving(routes: list[Route]) -> list[Route]:
    """The routes that carry traffic, one per revision (percentages added up)."""
    total: dict[str, int] = {}
    for r in routes:
        total[r.revision] = total.get(r.revision, 0) + r.percent
    return [Route(rev, pct) for rev, pct in total.items() if pct > 0]
