"""Blue-green shapes, no I/O.

The new colour runs as its own Deployment ``<name>-blue`` or ``<name>-green`` whose pods
carry ``shiplog.io/service=<name>`` and ``shiplog.io/colour=<colour>`` — and not the
``app`` label, so the active Service keeps its traffic off the preview until the switch
replaces its selector with the colour's. The service's own Deployment ``<name>`` (from a
rolling update) has no colour; the first preview beside it is blue.
"""

from __future__ import annotations

import time

from adapters.targets.kubernetes.shapes import COLOURS, SERVICE_LABEL

COLOUR_LABEL = "shiplog.io/colour"


def selector(deployment: str, colour: str) -> dict[str, str]:
    return {SERVICE_LABEL: deployment, COLOUR_LABEL: colour}


def active_colour(service_selector: dict[str, str] | None) -> str | None:
    """The colour the active Service's selector picks; ``None`` for the uncoloured one."""
    colour = (service_selector or {}).get(COLOUR_LABEL)
    return colour if colour in COLOURS else None


def other(colour: str | None) -> str:
    """The colour a preview goes to beside ``colour`` (blue beside the uncoloured one)."""
    return "green" if colour == "blue" else "blue"


def scale_down_wait(switched_at: str | None, delay: float, *, now: float | None = None) -> float:
    """Seconds still to wait before the old colour may stop: ``delay`` after the switch
    (the whole delay when the switch time is unknown)."""
    try:
        since = float(switched_at) if switched_at else None
    except ValueError:
        since = None
    if since is None:
        return delay
    return max(0.0, since + delay - (time.time() if now is None else now))
