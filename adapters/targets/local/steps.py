"""The steps of the local target, each converging one (service, environment).

A step is declarative: applied to a target that already looks as it says, it starts
and stops nothing. Instances are started and found healthy before traffic goes to
them, and taken out of the routing before they are stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.targets import Snapshot, Step
from adapters.targets.local.run import StepFailed, StepRun
from adapters.targets.local.state import Instance, Role, Spec, TrackState
from adapters.targets.local.tracks import canary_weights, proportional_weights

#: the release setting that asks a canary step for a baseline: the stable version
#: started fresh beside the canary, taking as much traffic as the canary
BASELINE_SETTING = "baseline"


async def _rolling(run: StepRun, step: Step) -> dict[str, Any]:
    """Surge one batch of the new version, wait healthy, retire as many old instances."""
    spec = run.spec_for(step.release)
    wanted = step.replicas
    while True:
        new = run.matching(spec)
        if len(new) > wanted:
            await run.retire(new[wanted:])
            continue
        if len(new) == wanted and not run.others([spec]):
            break
        batch = min(step.batch_size, wanted - len(new))
        await run.start(spec, batch)
        _route_by_count(run, spec)
        await run.publish()
        old = _serving_first(run, run.others([spec]))
        done = len(run.matching(spec)) >= wanted
        await run.retire(old if done else old[:batch])
    run.set_tracks([TrackState(spec=spec, role="stable", weight=100, replicas=wanted)])
    await run.publish()
    return {"version": spec.version}


def _serving_first(run: StepRun, instances: list[Instance]) -> list[Instance]:
    serving = {t.version for t in run.state.tracks if t.weight > 0}
    return sorted(instances, key=lambda i: i.version not in serving)


def _route_by_count(run: StepRun, spec: Spec) -> None:
    """Mid-rolling, the new version and the versions that served share the traffic in
    proportion to their ready instances; idle ones (a blue-green colour) stay idle."""
    serving = {t.version for t in run.state.tracks if t.weight > 0} | {spec.version}
    counts = Counter(
        i.version
        for i in run.state.instances
        if i.status == "ready" and i.version in serving and i.variant is None
    )
    weights = proportional_weights(counts)
    tracks = [
        TrackState(
            spec=t.spec,
            role=t.role,
            weight=weights.get(t.version, 0),
            replicas=counts.get(t.version, t.replicas),
        )
        for t in run.state.tracks
        if t.version != spec.version and t.variant is None  # a baseline retires with the old
    ]
    new = TrackState(spec=spec, role="stable", weight=weights[spec.version], replicas=counts[spec.version])
    run.set_tracks([*tracks, new])


async def _preview(run: StepRun, step: Step) -> dict[str, Any]:
    """Start the new colour beside the active one; it takes no traffic."""
    spec = run.spec_for(step.release)
    have = run.matching(spec)
    await run.start(spec, step.replicas - len(have))
    current = run.state.track(spec.version)
    if current is not None and current.weight > 0:
        track = TrackState(spec=spec, role=current.role, weight=current.weight, replicas=step.replicas)
    else:
        track = TrackState(spec=spec, role="preview", weight=0, replicas=step.replicas)
    run.set_tracks([t for t in run.state.tracks if t.version != spec.version] + [track])
    await run.publish()
    extra = run.matching(spec)[step.replicas :]
    stale = [i for i in run.state.instances if i.version == spec.version and i.spec_id != spec.spec_id]
    await run.retire(extra + stale)
    return {"version": spec.version}


async def _switch(run: StepRun, step: Step) -> dict[str, Any]:
    """All traffic to the new colour; the old one keeps running, idle, until scale_down."""
    spec = run.spec_for(step.release)
    replicas = await _ensure_some(run, spec, step.replicas)
    tracks = [
        TrackState(spec=t.spec, role="preview", weight=0, replicas=t.replicas)
        for t in run.state.tracks
        if t.version != spec.version and t.variant is None
    ]
    run.set_tracks([*tracks, TrackState(spec=spec, role="active", weight=100, replicas=replicas)])
    await run.publish()
    await run.retire([i for i in run.state.instances if i.variant is not None])
    return {"version": spec.version}


async def _scale_down(run: StepRun, step: Step) -> dict[str, Any]:
    """Stop every instance that is not of the release's version."""
    spec = run.spec_for(step.release)
    replicas = await _ensure_some(run, spec, step.replicas)
    current = run.state.track(spec.version)
    role: Role = "stable" if current is not None and current.role in ("stable", "canary") else "active"
    run.set_tracks([TrackState(spec=spec, role=role, weight=100, replicas=replicas)])
    await run.retire(run.others([spec]))
    return {"version": spec.version}


async def _set_weight(run: StepRun, step: Step) -> dict[str, Any]:
    """Start the canary if it is not running, then give it ``weight``% of the traffic."""
    if step.weight is None:
        raise StepFailed("set_weight needs a weight")
    spec = run.spec_for(step.release)
    current = run.state.track(spec.version)
    if current is not None and current.role in ("stable", "active"):
        if current.spec.spec_id == spec.spec_id:
            return {"version": spec.version, "note": "already the stable version; weights unchanged"}
        # the split is by version: the same version cannot be both canary and stable
        raise StepFailed(
            f"{spec.version} already runs as {current.role} with another command or config; "
            "a canary needs a new version (use a rolling step to change the config)"
        )
    replicas = await _ensure_some(run, spec, 1)
    main = [t for t in run.state.tracks if t.variant is None]
    stable = _baseline_of(run, step, main, spec.version)
    # the baseline takes as much as the canary (stable keeps the rest), so both see equal shares
    share = min(step.weight, 100 - step.weight) if stable is not None else 0
    weights = canary_weights({t.version: t.weight for t in main}, spec.version, step.weight + share)
    if share:
        weights[spec.version] = step.weight
    baseline = None
    if stable is not None:
        baseline = TrackState(
            spec=stable.spec.as_variant("baseline"), role="baseline", weight=share, replicas=replicas
        )
        await run.start(baseline.spec, replicas - len(run.matching(baseline.spec)))
    tracks = []
    for t in main:
        if t.version == spec.version:
            continue
        role: Role = "stable" if weights[t.version] > 0 or t.role in ("stable", "active") else t.role
        tracks.append(TrackState(spec=t.spec, role=role, weight=weights[t.version], replicas=t.replicas))
    tracks.append(TrackState(spec=spec, role="canary", weight=weights[spec.version], replicas=replicas))
    if baseline is not None:
        tracks.append(baseline)
    run.set_tracks(tracks)
    await run.publish()
    stale = [i for i in run.state.instances if i.version == spec.version and i.spec_id != spec.spec_id]
    # a baseline no longer asked for, of another stable, or more instances than the canary has
    kept = run.matching(baseline.spec)[: baseline.replicas] if baseline is not None else []
    stale += [i for i in run.state.instances if i.variant is not None and i not in kept]
    await run.retire(stale)
    detail: dict[str, Any] = {"version": spec.version, "weight": weights[spec.version]}
    if baseline is not None:
        detail["baseline"] = {"version": baseline.version, "weight": baseline.weight}
    elif _wants_baseline(step):
        detail["note"] = "no stable version serves: no baseline started"
    return detail


def _wants_baseline(step: Step) -> bool:
    wanted = step.release.settings.get(BASELINE_SETTING, False)
    if not isinstance(wanted, bool):
        raise StepFailed(f"release settings.{BASELINE_SETTING} must be true or false, got {wanted!r}")
    return wanted


def _baseline_of(run: StepRun, step: Step, main: list[TrackState], canary: str) -> TrackState | None:
    """The track whose version a baseline runs: the stable serving the most traffic
    (before this step), when the release's settings ask for a baseline."""
    if not _wants_baseline(step):
        return None
    # a stable at 0% (canary and baseline at 50% each) still is the one
    serving = [t for t in main if t.version != canary and t.role in ("stable", "active")]
    return max(serving, key=lambda t: t.weight, default=None)


async def _promote(run: StepRun, step: Step) -> dict[str, Any]:
    """The canary, scaled to ``replicas``, becomes the stable at 100%; the rest stops."""
    spec = run.spec_for(step.release)
    await run.start(spec, step.replicas - len(run.matching(spec)))
    run.set_tracks([TrackState(spec=spec, role="stable", weight=100, replicas=step.replicas)])
    await run.retire(run.others([spec]) + run.matching(spec)[step.replicas :])
    return {"version": spec.version}


async def _ensure_some(run: StepRun, spec: Spec, replicas: int) -> int:
    """Keep the running instances of ``spec`` if any, otherwise start ``replicas``;
    returns how many run."""
    have = len(run.matching(spec))
    if have:
        return have
    await run.start(spec, replicas)
    return replicas


async def restore(run: StepRun, snapshot: Snapshot) -> dict[str, Any]:
    entries = snapshot.state.get("tracks") or []
    wanted: list[TrackState] = []
    for entry in entries:
        try:
            spec = Spec.model_validate({k: v for k, v in entry.items() if k in Spec.model_fields})
            track = TrackState(
                spec=spec, role=entry["role"], weight=entry["weight"], replicas=entry["replicas"]
            )
        except (KeyError, ValueError) as exc:
            raise StepFailed(f"the snapshot's track {entry!r} is not one this target wrote: {exc}") from exc
        wanted.append(track)
    for track in wanted:
        await run.start(track.spec, track.replicas - len(run.matching(track.spec)))
    run.set_tracks(wanted)
    await run.publish()
    extra = [i for t in wanted for i in run.matching(t.spec)[t.replicas :]]
    await run.retire(run.others([t.spec for t in wanted]) + extra)
    return {"version": snapshot.version}


HANDLERS: dict[str, Callable[[StepRun, Step], Awaitable[dict[str, Any]]]] = {
    "rolling": _rolling,
    "preview": _preview,
    "switch": _switch,
    "scale_down": _scale_down,
    "set_weight": _set_weight,
    "promote": _promote,
}
