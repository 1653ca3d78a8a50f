"""The notification consumer's I/O: deliver each planned message through its channel,
retried with capped exponential backoff, each attempt under a timeout.

``Courier`` is the port the runner builds from ``notifications.yaml``. It keeps the
outcome of every delivery it made (bounded): the shell may run ``gather`` again for
the same event — after a concurrency conflict on the stream, a database hiccup
before the append, or when the in-process fast path and Kafka bring the same event
at once — and each of those gets the first delivery's outcome instead of sending
again. Across a crash, only a delivery whose record did not reach the log is sent
again, with the same delivery id.

Credentials are resolved per delivery (a rotated secret is picked up) and scrubbed
from any error text before it is logged or recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from adapters.notify import Credentials, Notifier, create_notifier
from consumers.notification.config import (
    EmailChannel,
    NotificationsFile,
    SlackChannel,
    WebhookChannel,
    load_notifications,
)
from consumers.notification.core import NotificationState, Outcome, Pending, plan
from consumers.planning.pipeline import SecretRef
from consumers.secrets import resolve_values
from consumers.shell import Backoff
from events.envelope import CloudEvent
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

log = logging.getLogger(__name__)

#: how many delivery outcomes a courier remembers
REMEMBERED = 10_000
#: the outer guard over an attempt, beyond the channel's own timeout
TIMEOUT_GRACE_S = 1.0
ERROR_MAX = 500

AnyChannel = WebhookChannel | SlackChannel | EmailChannel


class Courier:
    """Delivers notifications for the notification consumer (``Ports.notifier``)."""

    def __init__(
        self,
        config: NotificationsFile,
        config_dir: Path | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.config = config
        self.config_dir = config_dir
        self.clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._deliveries: OrderedDict[str, asyncio.Task[Outcome]] = OrderedDict()

    @classmethod
    def from_dir(cls, config_dir: Path) -> Courier:
        """From ``<config_dir>/notifications.yaml`` (nothing configured when absent);
        raises ``NotificationsConfigInvalid`` with every error."""
        return cls(load_notifications(config_dir), config_dir)

    async def deliver(self, pending: Sequence[Pending]) -> list[Outcome]:
        """Deliver to every channel at once; the outcome of each."""
        return list(await asyncio.gather(*(self._once(p) for p in pending)))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _once(self, pending: Pending) -> Outcome:
        key = pending.message.id
        task = self._deliveries.get(key)
        if task is None or task.cancelled():
            task = asyncio.create_task(self._deliver(pending), name=f"notify-{key}")
            self._deliveries[key] = task
            while len(self._deliveries) > REMEMBERED:
                self._deliveries.popitem(last=False)
        # a handler cancelled while waiting must not cancel a delivery another awaits
        return await asyncio.shield(task)

    async def _deliver(self, p: Pending) -> Outcome:
        channel = self.config.channel(p.channel)
        assert channel is not None, "plan only names configured channels"
        secrets: list[str] = []

        def outcome(ok: bool, attempts: int, text: str) -> Outcome:
            text = _scrub(text, secrets)[:ERROR_MAX]
            return Outcome(
                p.message.id,
                p.channel,
                p.kind,
                ok,
                attempts,
                response=text if ok else "",
                error="" if ok else text,
            )

        try:
            notifier = self._notifier(channel, secrets)
        except InvalidInput as exc:
            log.warning(
                "notification %s to %s not sent: %s", p.message.id, p.channel, _scrub(str(exc), secrets)
            )
            return outcome(False, 0, str(exc))
        policy = self.config.delivery
        attempts = channel.attempts or policy.attempts
        timeout = (channel.timeout_s or policy.timeout_s) + TIMEOUT_GRACE_S
        backoff = Backoff(policy.backoff_initial_s, policy.backoff_cap_s)
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout(timeout):
                    response = await notifier.post(p.message)
            except AdapterRejected as exc:
                error = str(exc)
                break
            except (AdapterUnavailable, TimeoutError) as exc:
                error = str(exc) or f"no answer within {timeout:g}s"
            except Exception as exc:  # an adapter's bug is the notification's failure, not the consumer's
                error = f"{type(exc).__name__}: {exc}"
                break
            else:
                log.info(
                    "notification %s about %s to %s (%s): sent after %d attempt(s)",
                    p.message.id,
                    p.about,
                    p.channel,
                    p.kind,
                    attempt,
                )
                return outcome(True, attempt, response)
            if attempt < attempts:
                delay = backoff.next_delay()
                log.warning(
                    "notification %s to %s: attempt %d of %d failed (%s); again in %.2fs",
                    p.message.id,
                    p.channel,
                    attempt,
                    attempts,
                    _scrub(error, secrets),
                    delay,
                )
                await asyncio.sleep(delay)
        log.warning(
            "notification %s about %s to %s (%s) failed after %d attempt(s): %s",
            p.message.id,
            p.about,
            p.channel,
            p.kind,
            attempt,
            _scrub(error, secrets),
        )
        return outcome(False, attempt, error)

    def _notifier(self, channel: AnyChannel, secrets: list[str]) -> Notifier:
        """The channel's notifier with its credentials resolved now; each resolved
        value is added to ``secrets`` so error texts can be scrubbed of it."""
        timeout = channel.timeout_s or self.config.delivery.timeout_s
        settings: dict[str, Any]
        secret: str | None = None
        if isinstance(channel, WebhookChannel | SlackChannel):
            settings = {"url": self._resolve(channel.name, "url", channel.url, secrets), "timeout_s": timeout}
            if isinstance(channel, WebhookChannel):
                secret = self._resolve(channel.name, "signing_secret", channel.signing_secret, secrets)
        else:
            settings = {
                "host": channel.host,
                "port": channel.port,
                "starttls": channel.starttls,
                "tls": channel.tls,
                "sender": channel.sender,
                "recipients": tuple(channel.to),
                "username": channel.username,
                "timeout_s": timeout,
            }
            if channel.password is not None:
                secret = self._resolve(channel.name, "password", channel.password, secrets)
        if self._http is None:
            self._http = aiohttp.ClientSession()
        credentials = Credentials(SecretStr(secret) if secret is not None else None)
        return create_notifier(channel.kind, settings, credentials, http=self._http)

    def _resolve(self, channel: str, field: str, value: str | SecretRef, secrets: list[str]) -> str:
        if isinstance(value, str):
            return value
        resolved = resolve_values(
            {f"{channel}.{field}": value.model_dump(exclude_none=True)}, self.config_dir
        )
        secret = next(iter(resolved.values()))
        secrets.append(secret)
        return secret


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def gather(ports: Any, state: NotificationState, event: CloudEvent) -> list[Outcome]:
    """Deliver what ``plan`` calls for; the outcomes go to ``decide``."""
    courier: Courier | None = getattr(ports, "notifier", None)
    if courier is None:
        return []
    pending = plan(state, event, courier.config, now=courier.clock())
    if not pending:
        return []
    return await courier.deliver(pending)
