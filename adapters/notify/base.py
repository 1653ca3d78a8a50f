"""What every notification channel shares: the message, the protocol, the credentials,
and how an HTTP answer is read (retry, or give up)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import SecretStr

from events.errors import AdapterRejected, AdapterUnavailable

#: per attempt, unless the channel's config says otherwise
DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = "shiplog-notifier/1"

#: HTTP statuses worth another attempt: the receiver is away, overloaded or slow
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Message:
    """One notification about one event for one channel, before a channel renders it."""

    #: stable per (event, channel): the delivery id receivers drop duplicates by
    id: str
    #: the CloudEvents type of the event it is about (``shiplog.approval.requested.v2``)
    event_type: str
    #: one line, e.g. ``Approval needed: checkout 1.4.2 -> production``
    title: str
    #: a few plain-text lines
    text: str
    #: ``(label, value)`` pairs (service, environment, level, ...)
    facts: tuple[tuple[str, str], ...] = ()
    #: the JSON document a generic webhook receives
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    """A channel's secret, resolved at the last moment; ``SecretStr`` keeps it out of
    reprs, and so out of tracebacks and logs."""

    #: the webhook's HMAC key, or the SMTP password
    secret: SecretStr | None = None


class Notifier(Protocol):
    """One channel of one kind. Implementations are ``<Vendor>Notifier`` with a
    ``TYPE``; their constructors take a config and credentials, never the environment."""

    TYPE: ClassVar[str]

    async def post(self, message: Message) -> str:
        """Deliver ``message`` once. Returns the receiver's answer in short (``HTTP 200``,
        the SMTP reply). Raises ``AdapterUnavailable`` when another attempt may succeed
        (no answer, a timeout, HTTP 5xx or 429) and ``AdapterRejected`` when it will
        not (HTTP 4xx, a refused recipient). Error texts never carry a credential."""
        ...


def http_outcome(status: int, reason: str, what: str) -> str:
    """An HTTP answer -> the response to record, or the error to raise."""
    if 200 <= status < 300:
        return f"HTTP {status}"
    detail = f"{what} answered HTTP {status}" + (f" {reason}" if reason else "")
    if status in RETRYABLE_STATUSES or status >= 500:
        raise AdapterUnavailable(detail)
    raise AdapterRejected(detail)
