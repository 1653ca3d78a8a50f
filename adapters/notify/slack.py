"""Slack incoming webhooks: ``{"text": ..., "blocks": [...]}`` POSTed to the hook's URL.

The URL is the credential (it holds the token), so it is usually configured as a
secret reference; it never appears in an error. Slack answers 200 ``ok``; 4xx with
a reason (``invalid_payload``, ``no_service``, ``channel_is_archived``) is final,
429 and 5xx are worth another attempt.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import orjson

from adapters.notify.base import Credentials, Message, http_outcome
from adapters.notify.webhook import DELIVERY_HEADER, EVENT_HEADER, HttpChannelConfig, post_json

# Slack's limits on block texts
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10


def escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(message: Message) -> dict[str, Any]:
    """The incoming-webhook payload: ``text`` is the fallback shown in notifications,
    ``blocks`` the formatted message."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(message.title, HEADER_MAX)}},
    ]
    if message.text:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(message.text), SECTION_MAX)}}
        )
    if message.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _cut(f"*{escape(label)}*\n{escape(value)}", FIELD_MAX)}
                    for label, value in message.facts[:FIELDS_MAX]
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": escape(f"shiplog · {message.event_type} · {message.id}")}
            ],
        }
    )
    fallback = f"{message.title}\n{message.text}" if message.text else message.title
    return {"text": escape(fallback), "blocks": blocks}


class SlackNotifier:
    TYPE: ClassVar[str] = "slack"

    def __init__(
        self,
        config: HttpChannelConfig,
        credentials: Credentials,
        *,
        http: aiohttp.ClientSession | None = None,
    ):
        del credentials  # the URL is the credential
        self._config = config
        self._http = http

    async def post(self, message: Message) -> str:
        body = orjson.dumps(render(message))
        headers = {DELIVERY_HEADER: message.id, EVENT_HEADER: message.event_type}
        status, text = await post_json(self._http, self._config, body, headers, "Slack")
        return http_outcome(status, text.strip(), "Slack") + (f" {text.strip()}" if text.strip() else "")
