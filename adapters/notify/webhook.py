"""A generic webhook: the message as JSON, signed as GitHub signs its webhooks.

Headers: ``X-Shiplog-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` under the
channel's secret, ``X-Shiplog-Delivery: <notification id>`` (stable across
redeliveries: a receiver drops a delivery id it has seen) and ``X-Shiplog-Event:
<event type>``. A receiver checks the signature over the raw body bytes with a
constant-time comparison (``verify_signature``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import ClassVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from adapters.notify.base import DEFAULT_TIMEOUT_S, USER_AGENT, Credentials, Message, http_outcome
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

SIGNATURE_HEADER = "X-Shiplog-Signature-256"
DELIVERY_HEADER = "X-Shiplog-Delivery"
EVENT_HEADER = "X-Shiplog-Event"
#: how much of a refusing receiver's answer goes into the error
ANSWER_EXCERPT = 200


class HttpChannelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # may itself be a secret (Slack's URLs are): never in a repr
    url: str = Field(min_length=1, repr=False)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


async def post_json(
    session: aiohttp.ClientSession | None,
    config: HttpChannelConfig,
    body: bytes,
    headers: dict[str, str],
    what: str,
) -> tuple[int, str]:
    """POST ``body``; ``(status, text)`` of the answer, or a translated error. The URL
    never appears in an error or a log line: it may hold a token. (aiohttp rather than
    httpx for this reason: httpx logs every request's URL at INFO.)"""
    owned = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with http.post(
            config.url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            allow_redirects=False,
        ) as response:
            text = (await response.content.read(ANSWER_EXCERPT)).decode(errors="replace")
            return response.status, text
    except TimeoutError as exc:
        raise AdapterUnavailable(f"{what} did not answer within {config.timeout_s:g}s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise AdapterUnavailable(
            f"{what} is unreachable: {exc.os_error.strerror or type(exc.os_error).__name__}"
        ) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise AdapterUnavailable(f"{what}: the connection failed ({type(exc).__name__})") from exc
    except (aiohttp.ClientError, ValueError) as exc:
        # an invalid URL's message quotes the URL: name the kind of error only
        raise AdapterRejected(f"{what} refused the request: {type(exc).__name__}") from exc
    finally:
        if owned:
            await http.close()


class WebhookNotifier:
    """POSTs ``message.body`` as JSON with the signature, delivery and event headers."""

    TYPE: ClassVar[str] = "webhook"

    def __init__(
        self,
        config: HttpChannelConfig,
        credentials: Credentials,
        *,
        http: aiohttp.ClientSession | None = None,
    ):
        if credentials.secret is None:
            raise InvalidInput("a webhook channel needs its signing secret")
        self._config = config
        self._secret: SecretStr = credentials.secret
        self._http = http

    def render(self, message: Message) -> tuple[bytes, dict[str, str]]:
        """The exact bytes sent and the headers that go with them."""
        body = orjson.dumps(dict(message.body), option=orjson.OPT_SORT_KEYS)
        return body, {
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), body),
            DELIVERY_HEADER: message.id,
            EVENT_HEADER: message.event_type,
        }

    async def post(self, message: Message) -> str:
        body, headers = self.render(message)
        status, text = await post_json(self._http, self._config, body, headers, "the webhook")
        return http_outcome(status, text.strip(), "the webhook")
