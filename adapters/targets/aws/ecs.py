"""``EcsTarget``: ECS services rolled to new task-definition revisions, and blue-green
or canary across two colour services behind one load balancer listener.

Rolling: the service's task definition is copied into a new revision with the
release's image in its container and its config overlaid on the container's
environment (tagged ``shiplog:version``), the service is updated to it with
``step.replicas`` tasks, and the deployment is followed until it is done, failed or
past the deadline (``rollout_timeout_s``). Done is the PRIMARY deployment's
``rolloutState`` COMPLETED; FAILED (e.g. the deployment circuit breaker) fails the
step; without a verdict, the ``services-stable`` condition of the AWS CLI waiter —
one deployment left, ``runningCount == desiredCount`` — on the service now running
our task definition. (moto never moves ``rolloutState``; it does report the
stable condition.)

Two colours (``settings.colour_services`` and ``settings.target_groups``, e.g.
``{"blue": ..., "green": ...}``, and ``settings.listener_arn`` whose default action
forwards to the two target groups with weights — all created beforehand):

- the active colour is the one with the larger listener weight; ``rolling`` rolls it
  in place;
- ``preview`` rolls the other colour to the release (no traffic), ``switch`` sends it
  all traffic, ``scale_down`` sets every colour not running the release to 0 tasks;
- ``set_weight N`` rolls the other colour (or the one already running the release)
  and splits the listener N % to it; ``promote`` gives it 100 % and scales the old
  colour to 0.

Applied step ids and their results live in tags of the anchor service (the plain
service, or the first colour's), so a step re-driven after a crash is not applied
twice. An API call that fails after botocore's retries, a failed rollout and a
rollout past its deadline end the step with ``ok=False``; ``apply`` and ``restore``
never raise for them.

Where a service lives: cluster ``settings.cluster`` (default: the environment's
name), service ``settings.service`` (default: the service's name), container
``settings.container`` (default: the service's name). ``snapshot`` and ``status``
place the service by the release settings they are given, as ``apply`` does; without
them they use what the last ``apply`` of the service used in this process, else those
defaults. The snapshot records that placement, so ``restore`` acts on the same
services and listener in a process that never applied the release, whatever settings
it is given; they place only a snapshot that predates that record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.targets import Capabilities, Release, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.aws.api import (
    AwsApi,
    AwsCallFailed,
    RolloutFailed,
    digest,
    encode_result,
    from_tag_list,
    recorded,
    stale_tags,
    step_tag,
)
from adapters.targets.aws.config import SNAPSHOT_FORMAT, VERSION_TAG, AwsTargetConfig, EcsSettings
from events.errors import InvalidInput

#: the task definition fields a new revision copies (what RegisterTaskDefinition takes)
_TD_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)


@dataclass(frozen=True)
class Placement:
    region: str | None
    cluster: str
    service: str
    container: str
    listener_arn: str | None = None
    #: colour -> ECS service, colour -> target group ARN; empty: rolling only
    colours: dict[str, str] = field(default_factory=dict)
    target_groups: dict[str, str] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        """The service whose tags hold the applied steps."""
        return self.colours[sorted(self.colours)[0]] if self.colours else self.service


class EcsTarget:
    TYPE = "ecs"
    #: two colour services behind weighted target groups (when configured)
    capabilities = Capabilities(traffic_split=True, two_colours=True)

    def __init__(self, config: AwsTargetConfig) -> None:
        self.config = config
        self._api = AwsApi(config)
        self._placements: dict[tuple[str, str], Placement] = {}
        #: task definition ARN -> its description and tags (a revision never changes)
        self._task_definitions: dict[str, dict[str, Any]] = {}

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """Each service's task definition and desired count, and the listener's
        weights; raises ``AwsCallFailed`` when the API cannot be read."""
        where = self._placement(service, environment, _parsed(settings))
        async with self._api.client("ecs", where.region) as ecs:
            services = {}
            found = await self._services(ecs, where, list(where.colours.values()) or [where.service])
            for name, svc in found.items():
                services[name] = {
                    "task_definition": svc["taskDefinition"],
                    "desired_count": svc["desiredCount"],
                    "version": await self._version(ecs, svc["taskDefinition"], where),
                }
        weights = await self._weights(where) if where.colours else {}
        state = {
            "format": SNAPSHOT_FORMAT,
            "cluster": where.cluster,
            "services": services,
            "listener_arn": where.listener_arn,
            "weights": weights,
            "placement": {
                "region": where.region,
                "service": where.service,
                "container": where.container,
                "colours": where.colours,
                "target_groups": where.target_groups,
            },
        }
        active = self._active(where, weights) if where.colours else where.service
        return Snapshot(
            service=service, environment=environment, version=services[active]["version"], state=state
        )

    async def apply(self, step: Step) -> StepResult:
        """Bring the services and the listener to what the step declares; a step id
        already applied returns its recorded result with ``already_applied=True``."""
        release = step.release
        where = self._placement(release.service, release.environment, EcsSettings.of(release.settings))
        self._placements[(release.service, release.environment)] = where
        if step.kind != "rolling" and not where.colours:
            raise InvalidInput(
                f"ecs target: {step.kind} needs two colours (settings colour_services, target_groups "
                "and listener_arn)"
            )
        if step.kind == "set_weight" and step.weight is None:
            raise InvalidInput("set_weight needs a weight")
        key = f"{step.deployment_id}/{step.step_id}"
        base: dict[str, Any] = {"cluster": where.cluster}
        try:
            async with self._api.client("ecs", where.region) as ecs:
                arn, tags = await self._tags(ecs, where)
                done = recorded(tags, key, step.step_id)
                if done is not None:
                    return done
                detail = {**base, **await self._apply(ecs, where, step)}
                result = StepResult(step_id=step.step_id, ok=True, detail=detail)
                await self._record(ecs, arn, tags, key, result)
                return result
        except (AwsCallFailed, RolloutFailed) as exc:
            return StepResult(step_id=step.step_id, ok=False, error=f"ecs {step.kind}: {exc}", detail=base)

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """One track per service with tasks or traffic: its version and the
        listener's weight (100 without colours)."""
        where = self._placement(service, environment, _parsed(settings))
        try:
            weights = await self._weights(where) if where.colours else {}
            active = self._active(where, weights) if where.colours else where.service
            tracks = []
            async with self._api.client("ecs", where.region) as ecs:
                found = await self._services(ecs, where, list(where.colours.values()) or [where.service])
                for colour, name in where.colours.items() or [("", where.service)]:
                    svc = found[name]
                    weight = weights.get(where.target_groups[colour], 0) if colour else 100
                    if svc["desiredCount"] == 0 and weight == 0:
                        continue
                    version = await self._version(ecs, svc["taskDefinition"], where)
                    role: Literal["stable", "canary"] = "stable" if name == active else "canary"
                    tracks.append(Track(version=version or "unknown", role=role, weight=weight))
        except AwsCallFailed:
            return TargetStatus(service=service, environment=environment, reachable=False)
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=tracks)

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Put back each service's task definition and desired count and the
        listener's weights, following each rollout; idempotent by step id. Where: the
        snapshot's recorded placement, else ``settings``."""
        state = snapshot.state
        if "services" not in state:
            return StepResult(step_id=step_id, ok=False, error="ecs restore: not an ecs snapshot")
        key = f"restore/{step_id}/{digest(state)}"
        detail: dict[str, Any] = {"cluster": state["cluster"], "services": state["services"]}
        where = self._placed(snapshot, state, settings)
        try:
            async with self._api.client("ecs", where.region) as ecs:
                arn, tags = await self._tags(ecs, where)
                done = recorded(tags, key, step_id)
                if done is not None:
                    return done
                # serving services first, then the weights, then the services stopped then
                services = state["services"].items()
                for name, svc in [(n, s) for n, s in services if s["desired_count"] > 0]:
                    await self._roll(ecs, where, name, svc["task_definition"], svc["desired_count"])
                if state.get("weights") and state.get("listener_arn"):
                    await self._set_weights(where, state["weights"])
                for name, svc in [(n, s) for n, s in services if s["desired_count"] == 0]:
                    await self._roll(ecs, where, name, svc["task_definition"], 0)
                result = StepResult(step_id=step_id, ok=True, detail={"restored": True})
                await self._record(ecs, arn, tags, key, result)
                return result.model_copy(update={"detail": detail})
        except (AwsCallFailed, RolloutFailed) as exc:
            return StepResult(step_id=step_id, ok=False, error=f"ecs restore: {exc}", detail=detail)

    # -- steps -----------------------------------------------------------------------

    async def _apply(self, ecs: Any, where: Placement, step: Step) -> dict[str, Any]:
        release = step.release
        if not where.colours:
            td = await self._register(ecs, where, where.service, release)
            await self._roll(ecs, where, where.service, td, step.replicas)
            return {"service": where.service, "task_definition": td, "version": release.version}
        weights = await self._weights(where)
        active = self._active(where, weights)
        colour_of = {name: colour for colour, name in where.colours.items()}
        if step.kind == "rolling":
            td = await self._register(ecs, where, active, release)
            await self._roll(ecs, where, active, td, step.replicas)
            return {"service": active, "task_definition": td, "version": release.version}
        running = await self._running(ecs, where, release.version)
        if step.kind == "scale_down":
            stopped = [name for name in where.colours.values() if name not in running]
            for name in stopped:
                await self._roll(ecs, where, name, None, 0)
            return {"scaled_down": stopped}
        # the colour that carries the release: one already running it beside the
        # active colour, else the active one if it runs it, else the other colour
        side = next((n for n in running if n != active), None)
        if side is None:
            side = active if active in running else next(n for n in where.colours.values() if n != active)
        if side not in running:
            td = await self._register(ecs, where, active, release, into=side)
            await self._roll(ecs, where, side, td, step.replicas)
        detail: dict[str, Any] = {"service": side, "colour": colour_of[side], "version": release.version}
        if step.kind == "preview":
            return {**detail, "weight": weights.get(where.target_groups[colour_of[side]], 0)}
        weight = 100 if step.kind in ("switch", "promote") or side == active else int(step.weight or 0)
        others = [c for c in where.colours if c != colour_of[side]]
        split = {where.target_groups[colour_of[side]]: weight}
        split.update({where.target_groups[c]: (100 - weight if i == 0 else 0) for i, c in enumerate(others)})
        await self._set_weights(where, split)
        if step.kind == "promote":
            for c in others:
                await self._roll(ecs, where, where.colours[c], None, 0)
        return {**detail, "weight": weight}

    async def _register(
        self, ecs: Any, where: Placement, source: str, release: Release, *, into: str | None = None
    ) -> str:
        """A new revision of ``into``'s task definition family (default: ``source``'s)
        from ``source``'s task definition, with the release's image and config."""
        svc = await self._service(ecs, where, source)
        td = (await self._task_definition(ecs, svc["taskDefinition"]))["taskDefinition"]
        if into is not None and into != source:
            target_svc = await self._service(ecs, where, into)
            family = target_svc["taskDefinition"].rsplit("/", 1)[-1].rsplit(":", 1)[0]
        else:
            family = td["family"]
        containers = [dict(c) for c in td["containerDefinitions"]]
        for container in containers:
            if container["name"] == where.container:
                env = {e["name"]: e["value"] for e in container.get("environment") or []}
                env.update(release.config)
                container["image"] = release.artifact
                container["environment"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
                break
        else:
            raise RolloutFailed(
                f"NoContainer: task definition {td['family']} has no container {where.container!r}"
            )
        params = {k: td[k] for k in _TD_FIELDS if td.get(k) not in (None, [], {})}
        params.update(family=family, containerDefinitions=containers)
        params["tags"] = [{"key": VERSION_TAG, "value": release.version[:256]}]
        registered = await self._api.call(ecs, "register_task_definition", **params)
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    async def _roll(self, ecs: Any, where: Placement, service: str, td: str | None, desired: int) -> None:
        """Update the service to ``td`` (None: keep its own) and ``desired`` tasks,
        then follow the deployment."""
        params: dict[str, Any] = {"cluster": where.cluster, "service": service, "desiredCount": desired}
        if td is not None:
            params["taskDefinition"] = td
        updated = (await self._api.call(ecs, "update_service", **params))["service"]
        await self._follow(ecs, where, service, updated["taskDefinition"])

    async def _follow(self, ecs: Any, where: Placement, service: str, td: str) -> None:
        deadline = time.monotonic() + self.config.rollout_timeout_s
        while True:
            svc = await self._service(ecs, where, service)
            if self._done(svc, td):
                return
            if time.monotonic() >= deadline:
                raise RolloutFailed(f"RolloutTimeout: {where.cluster}/{service} not stable in time")
            await asyncio.sleep(min(self.config.poll_interval_s, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _done(svc: dict[str, Any], td: str) -> bool:
        if svc["taskDefinition"] != td:
            raise RolloutFailed(f"Superseded: the service now runs {svc['taskDefinition']}, not {td}")
        deployments = svc.get("deployments") or []
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        if primary is not None and primary.get("taskDefinition") == td:
            state = primary.get("rolloutState")
            if state == "FAILED":
                raise RolloutFailed(
                    f"DeploymentFailed: {primary.get('rolloutStateReason', 'no reason given')}"
                )
            if state == "COMPLETED":
                return True
        return len(deployments) <= 1 and svc.get("runningCount") == svc.get("desiredCount")

    # -- the listener ----------------------------------------------------------------

    async def _weights(self, where: Placement) -> dict[str, int]:
        """Target group ARN -> weight of the listener's default forward action."""
        assert where.listener_arn is not None
        async with self._api.client("elbv2", where.region) as elb:
            listener = (await self._api.call(elb, "describe_listeners", ListenerArns=[where.listener_arn]))[
                "Listeners"
            ][0]
        for action in listener.get("DefaultActions") or []:
            if action.get("Type") == "forward":
                groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
                if groups:
                    return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
                if action.get("TargetGroupArn"):
                    return {action["TargetGroupArn"]: 100}
        raise RolloutFailed(f"NoForward: listener {where.listener_arn} has no forward default action")

    async def _set_weights(self, where: Placement, weights: dict[str, int]) -> None:
        groups = [{"TargetGroupArn": arn, "Weight": w} for arn, w in weights.items()]
        async with self._api.client("elbv2", where.region) as elb:
            await self._api.call(
                elb,
                "modify_listener",
                ListenerArn=where.listener_arn,
                DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}],
            )

    @staticmethod
    def _active(where: Placement, weights: dict[str, int]) -> str:
        """The colour service with the larger weight (the first colour on a tie)."""
        colour = max(sorted(where.colours), key=lambda c: weights.get(where.target_groups[c], 0))
        return where.colours[colour]

    # -- reading ---------------------------------------------------------------------

    async def _service(self, ecs: Any, where: Placement, name: str) -> dict[str, Any]:
        return (await self._services(ecs, where, [name]))[name]

    async def _services(
        self, ecs: Any, where: Placement, names: list[str], *, tags: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The named services (in one call), with their tags if asked; raises
        ``AwsCallFailed`` when one does not exist."""
        params: dict[str, Any] = {"cluster": where.cluster, "services": names}
        if tags:
            params["include"] = ["TAGS"]
        found = await self._api.call(ecs, "describe_services", **params)
        services = {
            s["serviceName"]: dict(s) for s in found.get("services", []) if s.get("status") != "INACTIVE"
        }
        for name in names:
            if name not in services:
                raise AwsCallFailed(
                    f"DescribeServices: service {where.cluster}/{name} does not exist", code="NotFound"
                )
        return services

    async def _task_definition(self, ecs: Any, arn: str) -> dict[str, Any]:
        if arn not in self._task_definitions:
            found = await self._api.call(
                ecs, "describe_task_definition", taskDefinition=arn, include=["TAGS"]
            )
            self._task_definitions[arn] = found
        return self._task_definitions[arn]

    async def _version(self, ecs: Any, td: str, where: Placement) -> str | None:
        found = await self._task_definition(ecs, td)
        version = from_tag_list(found.get("tags")).get(VERSION_TAG)
        if version is not None:
            return version
        for container in found["taskDefinition"]["containerDefinitions"]:
            if container["name"] == where.container:
                return str(container["image"]).rsplit(":", 1)[-1]
        return None

    async def _running(self, ecs: Any, where: Placement, version: str) -> list[str]:
        """The colour services whose task definition is of ``version`` and that run tasks."""
        out = []
        for name, svc in (await self._services(ecs, where, list(where.colours.values()))).items():
            if svc["desiredCount"] > 0 and await self._version(ecs, svc["taskDefinition"], where) == version:
                out.append(name)
        return out

    async def _tags(self, ecs: Any, where: Placement) -> tuple[str, dict[str, str]]:
        svc = (await self._services(ecs, where, [where.anchor], tags=True))[where.anchor]
        return str(svc["serviceArn"]), from_tag_list(svc.get("tags"))

    async def _record(self, ecs: Any, arn: str, tags: dict[str, str], key: str, result: StepResult) -> None:
        stale = stale_tags(tags, self.config.applied_keep)
        if stale:
            await self._api.call(ecs, "untag_resource", resourceArn=arn, tagKeys=stale)
        tag = [{"key": step_tag(key), "value": encode_result(result)}]
        await self._api.call(ecs, "tag_resource", resourceArn=arn, tags=tag)

    @staticmethod
    def _colours(where: Placement) -> dict[str, Any]:
        return {
            "listener_arn": where.listener_arn,
            "colours": where.colours,
            "target_groups": where.target_groups,
        }

    def _placed(
        self, snapshot: Snapshot, state: dict[str, Any], settings: Mapping[str, Any] | None
    ) -> Placement:
        """Where the snapshot was taken; a snapshot that does not say (taken before it
        recorded its placement) is placed as ``snapshot`` would place it with ``settings``."""
        placed = state.get("placement")
        if placed is None:
            base = self._placement(snapshot.service, snapshot.environment, _parsed(settings))
            return Placement(
                base.region, state["cluster"], base.service, base.container, **self._colours(base)
            )
        return Placement(
            region=placed["region"],
            cluster=state["cluster"],
            service=placed["service"],
            container=placed["container"],
            listener_arn=state.get("listener_arn"),
            colours=dict(placed["colours"]),
            target_groups=dict(placed["target_groups"]),
        )

    def _placement(self, service: str, environment: str, settings: EcsSettings | None) -> Placement:
        if settings is None:
            known = self._placements.get((service, environment))
            if known is not None:
                return known
            settings = EcsSettings()
        colours = dict(settings.colour_services or {})
        groups = dict(settings.target_groups or {})
        if colours and (set(colours) != set(groups) or len(colours) != 2 or not settings.listener_arn):
            raise InvalidInput(
                "ecs settings: two colours need colour_services and target_groups for the same two "
                "colours, and listener_arn"
            )
        return Placement(
            region=settings.region,
            cluster=settings.cluster or environment,
            service=settings.service or service,
            container=settings.container or service,
            listener_arn=settings.listener_arn,
            colours=colours,
            target_groups=groups,
        )


def _parsed(settings: Mapping[str, Any] | None) -> EcsSettings | None:
    """The caller's release settings, parsed as ``apply`` parses them (None: none given)."""
    return None if settings is None else EcsSettings.of(dict(settings))
