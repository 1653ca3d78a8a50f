"""Notification channels behind one small protocol (``Notifier.post``): a generic
signed webhook, Slack incoming webhooks, and e-mail over SMTP.

``create_notifier(kind, config, credentials)`` maps a kind to its class and raises
on an unknown one — never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from adapters.notify.base import DEFAULT_TIMEOUT_S, Credentials, Message, Notifier, http_outcome
from adapters.notify.slack import SlackNotifier
from adapters.notify.smtp import SmtpChannelConfig, SmtpNotifier
from adapters.notify.webhook import HttpChannelConfig, WebhookNotifier, sign, verify_signature
from events.errors import InvalidInput

#: kind -> (class, its config model)
NOTIFIERS: dict[str, tuple[type[Any], type[BaseModel]]] = {
    WebhookNotifier.TYPE: (WebhookNotifier, HttpChannelConfig),
    SlackNotifier.TYPE: (SlackNotifier, HttpChannelConfig),
    SmtpNotifier.TYPE: (SmtpNotifier, SmtpChannelConfig),
}
KINDS = tuple(NOTIFIERS)


def create_notifier(
    kind: str,
    config: Mapping[str, Any],
    credentials: Credentials,
    *,
    http: aiohttp.ClientSession | None = None,
) -> Notifier:
    """A notifier of ``kind``; ``http`` is a client to share between HTTP channels."""
    entry = NOTIFIERS.get(kind)
    if entry is None:
        raise InvalidInput(f"unknown notification channel kind {kind!r}; known: {', '.join(KINDS)}")
    cls, model = entry
    try:
        settings = model.model_validate(dict(config))
    except ValidationError as exc:
        # the config may hold a secret URL: name the fields, not the input
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise InvalidInput(f"invalid {kind} channel settings: {fields}") from None
    notifier: Notifier = cls(settings, credentials, http=http)
    return notifier


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KINDS",
    "NOTIFIERS",
    "Credentials",
    "HttpChannelConfig",
    "Message",
    "Notifier",
    "SlackNotifier",
    "SmtpChannelConfig",
    "SmtpNotifier",
    "WebhookNotifier",
    "create_notifier",
    "http_outcome",
    "sign",
    "verify_signature",
]
