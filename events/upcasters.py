"""Upcasters: how every published old version of an event becomes the current one.

A published version never changes. When a type gets a new shape, its class in
``events/`` becomes the new version and the old one lives on only here, as a pure
function over the envelope dict, one per step (``build_completed_v1_to_v2``),
registered under ``(type name, from version)``. The registry applies them in a loop
on every read path — the log and the topics — before validation.

No type has a second version yet; the mechanism is exercised by
``tests/unit/test_upcasting.py`` with a registry of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Envelope = dict[str, Any]
Upcaster = Callable[[Envelope], Envelope]

#: ``(type name, from version) -> function`` returning the envelope at from version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
