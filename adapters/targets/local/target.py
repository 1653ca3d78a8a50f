"""``LocalTarget``: a service as real processes on this machine, behind a weighted proxy.

Each (service, environment) has a record (see ``state.py``), a proxy process on a
stable port (see ``proxy.py``) and instances started from the release's command
template on free ports. A step converges the record and the processes to what it
declares; the proxy follows the record's routing table.

Release settings the local target reads:

- ``command``: list of strings, placeholders ``{port}``, ``{version}``, ``{artifact}``,
  ``{service}``, ``{environment}`` and ``{python}`` (the interpreter running shiplog)
  (required);
- ``health_path``: answers 200 when an instance is up (default ``/healthz``);
- ``health_timeout``: seconds an instance may take to come up (default from config);
- ``cwd``: working directory of the command (default ``LocalTargetConfig.workdir``);
- ``baseline``: ``true`` asks every ``set_weight`` step for a baseline: the stable
  version's command and config started fresh beside the canary as a ``baseline``
  track taking as much traffic as the canary (canary w%, baseline w%, stable the
  rest); promoting, scaling down or restoring a snapshot without it stops it.

``Release.config`` becomes extra environment variables of the instances.

``snapshot``, ``status`` and ``restore`` take the release settings too (the ``Target``
protocol) and need none of them: what runs is read from the record of (service,
environment) in the state dir, which outlives the process, and each track keeps the
command it was started with. The settings only shape instances a step starts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from adapters.targets import Capabilities, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.local import processes, steps
from adapters.targets.local.config import LocalTargetConfig
from adapters.targets.local.processes import ProcessFailed
from adapters.targets.local.run import StepFailed, StepRun, now, ping
from adapters.targets.local.state import FORMAT, AppliedStep, StateStore, digest
from adapters.targets.local.wire import CONTROL_PATH, METRICS_PATH
from events.errors import AdapterUnavailable


class LocalTarget:
    TYPE = "local"
    capabilities = Capabilities(traffic_split=True, two_colours=True)

    def __init__(self, config: LocalTargetConfig) -> None:
        self.config = config
        self.store = StateStore(config.state_dir, host=config.host, keep=config.applied_keep)

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """What runs now — versions, command templates, config hashes, replicas, weights —
        read from the record; enough for ``restore`` to bring it back exactly."""
        state = self.store.load(service, environment)
        serving = [t for t in state.tracks if t.weight > 0 and t.role in ("stable", "active")]
        main = max(serving, key=lambda t: t.weight, default=None)
        tracks = [
            {"role": t.role, "weight": t.weight, "replicas": t.replicas, **t.spec.record()}
            for t in state.tracks
        ]
        return Snapshot(
            service=service,
            environment=environment,
            version=main.version if main else None,
            state={"format": FORMAT, "tracks": tracks},
        )

    async def apply(self, step: Step) -> StepResult:
        """Bring the (service, environment) to what the step declares; a step id already
        applied returns its recorded result with ``already_applied=True``."""
        release = step.release
        handler = steps.HANDLERS[step.kind]
        return await self._run(
            release.service,
            release.environment,
            key=f"{step.deployment_id}/{step.step_id}",
            step_id=step.step_id,
            kind=step.kind,
            action=lambda run: handler(run, step),
        )

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """The versions serving with roles, weights and instance URLs; ``reachable`` is
        whether the proxy answers (or, before the first deployment, whether the state
        directory is usable)."""
        state = self.store.load(service, environment)
        proxy = state.proxy
        if proxy is None or not processes.is_alive(proxy.pid, proxy.start_ticks):
            reachable = proxy is None and os.access(self.store.root, os.W_OK)
            endpoint = None
        else:
            endpoint = self._url(proxy.port)
            async with aiohttp.ClientSession() as session:
                reachable = await ping(session, endpoint + CONTROL_PATH) is not None
        live = {i.pid for i in state.instances if processes.is_alive(i.pid, i.start_ticks)}
        tracks = [
            Track(
                version=t.version,
                role=t.role,
                weight=t.weight,
                urls=[
                    self._url(i.port) for i in state.instances_of(t) if i.status == "ready" and i.pid in live
                ],
            )
            for t in state.tracks
        ]
        return TargetStatus(
            service=service,
            environment=environment,
            reachable=reachable,
            tracks=tracks,
            endpoint=endpoint,
            metrics_url=endpoint + METRICS_PATH if endpoint else None,
        )

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Start what the snapshot ran and is missing, route as it did, stop everything
        else; an empty snapshot leaves no instance running (the proxy stays, answering 503).
        ``settings`` are not needed: each track of the snapshot keeps its command.

        ``step_id`` should be unique per (service, environment), e.g. carry the
        deployment id: it is the idempotency key of the restore."""
        return await self._run(
            snapshot.service,
            snapshot.environment,
            # the snapshot's digest too: a step id reused by another deployment with
            # another snapshot must not be mistaken for this one
            key=f"restore/{step_id}/{digest(snapshot.model_dump(mode='json'))}",
            step_id=step_id,
            kind="restore",
            action=lambda run: steps.restore(run, snapshot),
        )

    async def close(self, *, stop_processes: bool = False) -> None:
        """Release the target; with ``stop_processes`` (shiplog stopping) also stop every
        instance and proxy the state directory records, and record that nothing runs."""
        if not stop_processes:
            return
        for recorded in self.store.load_all():
            async with self.store.locked(recorded.service, recorded.environment):
                state = self.store.load(recorded.service, recorded.environment)
                pids = [(i.pid, i.start_ticks) for i in state.instances]
                if state.proxy is not None:
                    pids.append((state.proxy.pid, state.proxy.start_ticks))
                await asyncio.gather(
                    *(processes.stop(pid, ticks, grace=self.config.stop_timeout) for pid, ticks in pids)
                )
                state.instances, state.tracks, state.proxy = [], [], None
                self.store.save(state)

    # -- running one step --------------------------------------------------------------

    async def _run(
        self,
        service: str,
        environment: str,
        *,
        key: str,
        step_id: str,
        kind: str,
        action: Callable[[StepRun], Awaitable[dict[str, Any]]],
    ) -> StepResult:
        async with self.store.locked(service, environment):
            state = self.store.load(service, environment)
            recorded = state.applied_result(key)
            if recorded is not None:
                return StepResult.model_validate({**recorded, "already_applied": True})
            async with aiohttp.ClientSession() as session:
                run = StepRun(self.config, self.store, state, session)
                try:
                    await run.forget_dead()
                    await run.ensure_proxy()
                    detail = await action(run)
                except (StepFailed, ProcessFailed) as exc:
                    await run.discard_unready()
                    return StepResult(step_id=step_id, ok=False, error=str(exc), detail=run.detail())
                except OSError as exc:
                    await run.discard_unready()
                    raise AdapterUnavailable(f"local target {service}/{environment}: {exc}") from exc
            result = StepResult(step_id=step_id, ok=True, detail={**run.detail(), **detail})
            state.applied.append(
                AppliedStep(key=key, kind=kind, applied_at=now(), result=result.model_dump(mode="json"))
            )
            self.store.save(state)
            return result

    def _url(self, port: int) -> str:
        return f"http://{self.config.host}:{port}"
