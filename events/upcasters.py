"""Upcasters: how every published old version of an event becomes the current one.

A published version never changes. When a type gets a new shape, its class in
``events/`` becomes the new version and the old one lives on only here, as a pure
function over the envelope dict, one per step (``build_completed_v1_to_v2``),
registered under ``(type name, from version)``. The registry applies them in a loop
on every read path — the log and the topics — before validation.

The approval answers and requests have a second version; the mechanism is also exercised by
``tests/unit/test_upcasting.py`` with a registry of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Envelope = dict[str, Any]
Upcaster = Callable[[Envelope], Envelope]

#: ``(type name, from version) -> function`` returning the envelope at from version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def _bump(envelope: Envelope, version: int) -> Envelope:
    name = envelope["type"].rsplit(".v", 1)[0]
    return {**envelope, "type": f"{name}.v{version}"}


def approval_requested_v1_to_v2(envelope: Envelope) -> Envelope:
    """v2 adds the level's position, roles, quorum, exclusions and what the request
    is bound to; a v1 request was one level, anyone, quorum 1, bound to nothing."""
    return _bump(envelope, 2)


def approval_answer_v1_to_v2(envelope: Envelope) -> Envelope:
    """v2 answers carry the role used, the level meant, what was seen (plan hash,
    digest) and the client address; a v1 answer carried none of them."""
    return _bump(envelope, 2)


UPCASTERS[("shiplog.approval.requested", 1)] = approval_requested_v1_to_v2
UPCASTERS[("shiplog.approval.granted", 1)] = approval_answer_v1_to_v2
UPCASTERS[("shiplog.approval.denied", 1)] = approval_answer_v1_to_v2
