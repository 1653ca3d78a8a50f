"""Gateway API ``HTTPRoute`` backend weights, no I/O.

A rule's traffic goes to its backendRefs in proportion to their weights (default 1). The
canary split finds the rules that reference the stable Service and sets, in each,
``100 - weight`` on it and ``weight`` on a backendRef to the canary Service (added beside
it, on the same port); promote and abort put 100 on stable and drop the canary's ref.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"


@dataclass(frozen=True)
class Backends:
    """The stable and canary Services, and where the route and they live."""

    stable: str
    canary: str
    route_namespace: str
    namespace: str

    def refers_to(self, ref: dict[str, Any], service: str) -> bool:
        """Whether the backendRef names this Service (of ``namespace``)."""
        return (
            ref.get("name") == service
            and ref.get("kind", "Service") == "Service"
            and ref.get("group", "") == ""
            and (ref.get("namespace") or self.route_namespace) == self.namespace
        )


def set_weights(rules: list[dict[str, Any]], backends: Backends, weight: int | None) -> list[dict[str, Any]]:
    """The rules with ``100 - weight`` on the stable Service and ``weight`` on the canary
    one; ``weight=None`` puts 100 on stable and removes the canary's ref. Raises
    ``LookupError`` when no rule references the stable Service."""
    out = copy.deepcopy(rules)
    found = False
    for rule in out:
        refs = rule.get("backendRefs") or []
        stable_ref = next((r for r in refs if backends.refers_to(r, backends.stable)), None)
        if stable_ref is None:
            continue
        found = True
        kept = [r for r in refs if not backends.refers_to(r, backends.canary)]
        stable_ref["weight"] = 100 - (weight or 0)
        if weight is not None:
            canary_ref: dict[str, Any] = {"name": backends.canary, "weight": weight}
            for field in ("namespace", "port"):
                if field in stable_ref:
                    canary_ref[field] = stable_ref[field]
            kept.insert(kept.index(stable_ref) + 1, canary_ref)
        rule["backendRefs"] = kept
    if not found:
        raise LookupError(f"no rule of the route references Service {backends.stable!r}")
    return out


def weights(rules: list[dict[str, Any]], backends: Backends) -> tuple[int, int] | None:
    """(stable, canary) weights in the first rule that references the stable Service."""
    for rule in rules:
        refs = rule.get("backendRefs") or []
        if any(backends.refers_to(r, backends.stable) for r in refs):
            stable, canary = (
                sum(int(r.get("weight", 1)) for r in refs if backends.refers_to(r, name))
                for name in (backends.stable, backends.canary)
            )
            return stable, canary
    return None


def backend_refs(rules: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [copy.deepcopy(rule.get("backendRefs") or []) for rule in rules]


def with_backend_refs(rules: list[dict[str, Any]], refs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rules with each one's backendRefs replaced by ``refs``; raises ``ValueError``
    when the route no longer has as many rules."""
    if len(rules) != len(refs):
        raise ValueError(f"the route has {len(rules)} rules, the snapshot {len(refs)}")
    out = copy.deepcopy(rules)
    for rule, backend in zip(out, refs, strict=True):
        rule["backendRefs"] = copy.deepcopy(backend)
    return out
