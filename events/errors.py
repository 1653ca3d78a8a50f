"""The one error hierarchy of shiplog.

Callers branch on these few classes, never on library exceptions: adapters
translate at their boundary and keep the cause (``raise X(...) from exc``).
"""

from __future__ import annotations


class ShiplogError(Exception):
    """Root of every error shiplog raises on purpose."""

    #: Whether trying the same thing again later may succeed.
    retryable: bool = False


class InvalidInput(ShiplogError):
    """Input that can never be processed as given: bad bytes, bad fields, bad config."""


class InvalidEvent(InvalidInput):
    """An event that is not JSON, not a CloudEvent, of an unknown type, or fails validation.

    ``reason`` is a short machine-readable kind (``not_json``, ``not_cloudevent``,
    ``unknown_type``, ``validation``); ``errors`` lists ``(field path, message)``.
    """

    def __init__(self, reason: str, message: str, errors: list[tuple[str, str]] | None = None):
        self.reason = reason
        self.errors = errors or []
        detail = "; ".join(f"{path}: {msg}" for path, msg in self.errors)
        super().__init__(f"{message}: {detail}" if detail else message)


class DomainRefusal(ShiplogError):
    """The domain says no: the command or event is valid but not allowed now."""


class ConcurrencyConflict(ShiplogError):
    """Someone else appended to the stream first; reload and decide again."""

    retryable = True


class AdapterUnavailable(ShiplogError):
    """A server we depend on did not answer (database, broker, target). Retry later."""

    retryable = True


class AdapterRejected(ShiplogError):
    """A server answered and refused; retrying the same request will not help."""
