"""``LambdaTarget``: publish a version of a function, then move its alias — all at
once, or by weighted routing for canaries.

Every step first makes sure a version of the release is published: one whose
description is ``shiplog <version>`` is reused (a re-driven step, a second canary
weight), otherwise the function's code is updated from the artifact, its
environment overlaid with the release's config, and a version published (with the
code's SHA-256, so a concurrent writer's code is never published by mistake). Then:

- ``rolling``, ``switch``, ``promote``: the alias points at the new version, with no
  routing (CodeDeploy's ``AllAtOnce``);
- ``set_weight N``: the alias keeps its version and sends ``N`` % to the new one
  through ``RoutingConfig.AdditionalVersionWeights`` (100, or an alias with nothing
  to split from, points it at the new version);
- ``preview``: the version is published and takes no traffic (blue-green's second
  colour; invoke it by its qualifier);
- ``scale_down``: nothing to stop — versions run on demand; recorded as done.

Artifacts: ``s3://bucket/key[?versionId=...]`` (a zip in S3), a container image URI
for a function of package type ``Image``, or a local zip file path. If the code and
configuration are those of an already published version, AWS returns that version
(whose description names the release it was published for).

Applied step ids and their results are kept in the function's tags (see
``adapters.targets.aws.api``), so a step re-driven after a crash is not applied
twice. A call that still fails after botocore's retries ends the step with
``ok=False`` and the error; it never raises out of ``apply`` or ``restore``.

Where a function lives: ``settings.function`` (default: the service's name) and the
alias ``settings.alias`` (default: the environment's name). ``snapshot`` and
``status`` place the function by the release settings they are given, as ``apply``
does; without them they use what the last ``apply`` of the service used in this
process, else those defaults. The snapshot names the function, alias and region, so
``restore`` acts on them whatever settings it is given; they place only a snapshot
that predates the region's record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from adapters.targets import Capabilities, Release, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.aws.api import (
    AwsApi,
    AwsCallFailed,
    RolloutFailed,
    digest,
    encode_result,
    is_not_found,
    recorded,
    stale_tags,
    step_tag,
)
from adapters.targets.aws.config import SNAPSHOT_FORMAT, AwsTargetConfig
from adapters.targets.serverless.config import LambdaSettings, description, version_of
from events.errors import InvalidInput


@dataclass(frozen=True)
class Placement:
    region: str | None
    function: str
    alias: str


def _routing(alias: dict[str, Any] | None) -> dict[str, float]:
    if alias is None:
        return {}
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {str(k): float(v) for k, v in weights.items()}


class LambdaTarget:
    TYPE = "lambda"
    #: weighted alias routing (canary); an unrouted published version (blue-green); no
    #: instance URLs: a version's health is Lambda's (a plan checks none)
    capabilities = Capabilities(traffic_split=True, two_colours=True, instances=False)

    def __init__(self, config: AwsTargetConfig) -> None:
        self.config = config
        self._api = AwsApi(config)
        self._placements: dict[tuple[str, str], Placement] = {}

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """The alias's version and routing, and the release each of those versions
        was published for; ``function_version`` None when there is no alias yet.
        Raises ``AwsCallFailed`` when the API cannot be read."""
        where = self._placement(service, environment, _parsed(settings))
        async with self._api.client("lambda", where.region) as lam:
            alias = await self._alias(lam, where)
            state: dict[str, Any] = {
                "format": SNAPSHOT_FORMAT,
                "region": where.region,
                "function": where.function,
                "alias": where.alias,
                "function_version": alias["FunctionVersion"] if alias else None,
                "routing": _routing(alias),
            }
            releases = await self._releases(lam, where, alias)
        state["releases"] = releases
        version = releases.get(state["function_version"]) if alias else None
        return Snapshot(service=service, environment=environment, version=version, state=state)

    async def apply(self, step: Step) -> StepResult:
        """Bring the alias to what the step declares; a step id already applied
        returns its recorded result with ``already_applied=True``."""
        release = step.release
        where = self._placement(release.service, release.environment, LambdaSettings.of(release.settings))
        self._placements[(release.service, release.environment)] = where
        if step.kind == "set_weight" and step.weight is None:
            raise InvalidInput("set_weight needs a weight")
        key = f"{step.deployment_id}/{step.step_id}"
        base = {"function": where.function, "alias": where.alias}
        try:
            async with self._api.client("lambda", where.region) as lam:
                arn, tags = await self._tags(lam, where)
                done = recorded(tags, key, step.step_id)
                if done is not None:
                    return done
                detail = {**base, **await self._apply(lam, where, step)}
                result = StepResult(step_id=step.step_id, ok=True, detail=detail)
                await self._record(lam, arn, tags, key, result)
                return result
        except (AwsCallFailed, RolloutFailed) as exc:
            return StepResult(step_id=step.step_id, ok=False, error=f"lambda {step.kind}: {exc}", detail=base)

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """The alias's version (stable) and its routed version (canary) with their
        weights; ``reachable`` is whether the API answered."""
        where = self._placement(service, environment, _parsed(settings))
        try:
            async with self._api.client("lambda", where.region) as lam:
                alias = await self._alias(lam, where)
                releases = await self._releases(lam, where, alias)
        except AwsCallFailed:
            return TargetStatus(service=service, environment=environment, reachable=False)
        tracks: list[Track] = []
        if alias is not None:
            routing = _routing(alias)
            canary = {v: round(w * 100) for v, w in routing.items() if v != alias["FunctionVersion"]}
            stable_weight = 100 - sum(canary.values())
            main = alias["FunctionVersion"]
            tracks.append(
                Track(version=releases.get(main) or f"lambda:{main}", role="stable", weight=stable_weight)
            )
            for v, weight in canary.items():
                tracks.append(Track(version=releases.get(v) or f"lambda:{v}", role="canary", weight=weight))
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=tracks)

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Point the alias back at the snapshot's version with its routing (or delete
        an alias that did not exist then); idempotent by step id. Where: the snapshot's
        function, alias and region, else (no region recorded) as ``settings`` place it."""
        state = snapshot.state
        if "function" not in state:
            return StepResult(step_id=step_id, ok=False, error="lambda restore: not a lambda snapshot")
        # a snapshot taken before it named its region: where snapshot would look
        region = (
            state["region"]
            if "region" in state
            else self._placement(snapshot.service, snapshot.environment, _parsed(settings)).region
        )
        where = Placement(region, state["function"], state["alias"])
        key = f"restore/{step_id}/{digest(state)}"
        detail: dict[str, Any] = {"function": where.function, "alias": where.alias}
        try:
            async with self._api.client("lambda", where.region) as lam:
                arn, tags = await self._tags(lam, where)
                done = recorded(tags, key, step_id)
                if done is not None:
                    return done
                alias = await self._alias(lam, where)
                target_version = state.get("function_version")
                if target_version is None:
                    if alias is not None:
                        await self._api.call(
                            lam, "delete_alias", FunctionName=where.function, Name=where.alias
                        )
                    detail["restored"] = "no alias (there was none)"
                else:
                    await self._point(lam, where, alias, target_version, dict(state.get("routing") or {}))
                    detail.update(function_version=target_version, routing=state.get("routing") or {})
                result = StepResult(step_id=step_id, ok=True, detail=detail)
                await self._record(lam, arn, tags, key, result)
                return result
        except AwsCallFailed as exc:
            return StepResult(step_id=step_id, ok=False, error=f"lambda restore: {exc}", detail=detail)

    # -- steps -----------------------------------------------------------------------

    async def _apply(self, lam: Any, where: Placement, step: Step) -> dict[str, Any]:
        if step.kind == "scale_down":
            return {"scaled_down": "nothing to stop: Lambda versions run on demand"}
        version = await self._ensure_version(lam, where, step.release)
        detail: dict[str, Any] = {"function_version": version, "version": step.release.version}
        if step.kind == "preview":
            return {**detail, "weight": 0}
        alias = await self._alias(lam, where)
        if step.kind == "set_weight":
            assert step.weight is not None
            stable = alias["FunctionVersion"] if alias is not None else None
            if stable is None or stable == version or step.weight >= 100:
                await self._point(lam, where, alias, version, {})
                return {**detail, "weight": 100}
            routing = {version: round(step.weight / 100, 4)} if step.weight > 0 else {}
            await self._point(lam, where, alias, stable, routing)
            return {**detail, "weight": step.weight, "stable_function_version": stable}
        await self._point(lam, where, alias, version, {})
        return {**detail, "weight": 100}

    async def _point(
        self,
        lam: Any,
        where: Placement,
        alias: dict[str, Any] | None,
        version: str,
        routing: dict[str, float],
    ) -> None:
        """The alias at ``version`` with ``routing`` (created if missing)."""
        config = {"AdditionalVersionWeights": routing}
        if alias is None:
            await self._api.call(
                lam,
                "create_alias",
                FunctionName=where.function,
                Name=where.alias,
                FunctionVersion=version,
                RoutingConfig=config,
            )
        elif alias["FunctionVersion"] != version or _routing(alias) != routing:
            await self._api.call(
                lam,
                "update_alias",
                FunctionName=where.function,
                Name=where.alias,
                FunctionVersion=version,
                RoutingConfig=config,
            )

    async def _ensure_version(self, lam: Any, where: Placement, release: Release) -> str:
        """The published version of the release: found by its description, else
        published from the artifact."""
        wanted = description(release.version)
        found: list[int] = []
        marker: str | None = None
        while True:
            page = await self._api.call(
                lam,
                "list_versions_by_function",
                FunctionName=where.function,
                **({"Marker": marker} if marker else {}),
            )
            for v in page.get("Versions", []):
                if v.get("Version") != "$LATEST" and v.get("Description") == wanted:
                    found.append(int(v["Version"]))
            marker = page.get("NextMarker")
            if not marker:
                break
        if found:
            return str(max(found))
        config = await self._api.call(lam, "get_function_configuration", FunctionName=where.function)
        await self._api.call(
            lam, "update_function_code", FunctionName=where.function, **self._code(release.artifact, config)
        )
        config = await self._settled(lam, where)
        variables = dict((config.get("Environment") or {}).get("Variables") or {})
        merged = {**variables, **release.config}
        if merged != variables:
            await self._api.call(
                lam,
                "update_function_configuration",
                FunctionName=where.function,
                Environment={"Variables": merged},
            )
            config = await self._settled(lam, where)
        published = await self._api.call(
            lam,
            "publish_version",
            FunctionName=where.function,
            Description=wanted,
            CodeSha256=config["CodeSha256"],
        )
        return str(published["Version"])

    async def _settled(self, lam: Any, where: Placement) -> dict[str, Any]:
        """The function's configuration once its last update is no longer in
        progress; raises ``RolloutFailed`` if it failed or did not end in time."""
        deadline = time.monotonic() + self.config.rollout_timeout_s
        while True:
            config = await self._api.call(lam, "get_function_configuration", FunctionName=where.function)
            state = config.get("LastUpdateStatus")
            if state == "Failed":
                reason = config.get("LastUpdateStatusReason") or "no reason given"
                raise RolloutFailed(f"UpdateFailed: {where.function}: {reason}")
            if state != "InProgress":
                return config
            if time.monotonic() >= deadline:
                raise RolloutFailed(f"RolloutTimeout: {where.function} still updating")
            await asyncio.sleep(min(self.config.poll_interval_s, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _code(artifact: str, config: dict[str, Any]) -> dict[str, Any]:
        if artifact.startswith("s3://"):
            parts = urlsplit(artifact)
            params: dict[str, Any] = {"S3Bucket": parts.netloc, "S3Key": parts.path.lstrip("/")}
            version = parse_qs(parts.query).get("versionId")
            if version:
                params["S3ObjectVersion"] = version[0]
            return params
        if config.get("PackageType") == "Image":
            return {"ImageUri": artifact}
        path = Path(artifact.removeprefix("file://"))
        if path.is_file():
            return {"ZipFile": path.read_bytes()}
        raise InvalidInput(
            f"lambda artifact {artifact!r} is neither s3://bucket/key, an image (the function is a zip "
            "function) nor a zip file here"
        )

    # -- reading ---------------------------------------------------------------------

    async def _alias(self, lam: Any, where: Placement) -> dict[str, Any] | None:
        try:
            return await self._api.call(lam, "get_alias", FunctionName=where.function, Name=where.alias)
        except AwsCallFailed as exc:
            if is_not_found(exc):
                return None
            raise

    async def _releases(self, lam: Any, where: Placement, alias: dict[str, Any] | None) -> dict[str, str]:
        """Function version -> the release it was published for, for the versions
        the alias routes to."""
        if alias is None:
            return {}
        out: dict[str, str] = {}
        for v in [alias["FunctionVersion"], *_routing(alias)]:
            config = await self._api.call(
                lam, "get_function_configuration", FunctionName=where.function, Qualifier=v
            )
            name = version_of(config.get("Description"))
            if name is not None:
                out[v] = name
        return out

    async def _tags(self, lam: Any, where: Placement) -> tuple[str, dict[str, str]]:
        config = await self._api.call(lam, "get_function_configuration", FunctionName=where.function)
        arn = str(config["FunctionArn"])
        tags = await self._api.call(lam, "list_tags", Resource=arn)
        return arn, dict(tags.get("Tags") or {})

    async def _record(self, lam: Any, arn: str, tags: dict[str, str], key: str, result: StepResult) -> None:
        stale = stale_tags(tags, self.config.applied_keep)
        if stale:
            await self._api.call(lam, "untag_resource", Resource=arn, TagKeys=stale)
        await self._api.call(lam, "tag_resource", Resource=arn, Tags={step_tag(key): encode_result(result)})

    def _placement(self, service: str, environment: str, settings: LambdaSettings | None) -> Placement:
        if settings is None:
            known = self._placements.get((service, environment))
            if known is not None:
                return known
            settings = LambdaSettings()
        return Placement(
            region=settings.region,
            function=settings.function or service,
            alias=settings.alias or environment,
        )


def _parsed(settings: Mapping[str, Any] | None) -> LambdaSettings | None:
    """The caller's release settings, parsed as ``apply`` parses them (None: none given)."""
    return None if settings is None else LambdaSettings.of(dict(settings))
