"""What the API app is built with: adapters and settings made by the composition
root (the app itself never reads the environment)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.eventlog import PostgresEventLog
from adapters.identity import Authenticator
from events.envelope import CloudEvent
from events.signature import sign

#: roles that may operate deployments (promote, pause, resume, abort, schedule,
#: roll back) unless configured otherwise; who may approve is each gate's to say
DEFAULT_OPERATOR_ROLES = frozenset({"admin", "operator"})


@dataclass(frozen=True)
class Signer:
    """Signs what the API publishes (``events.signature``). The key stays in here."""

    key_id: str
    key: bytes = field(repr=False)

    def __call__(self, event: CloudEvent) -> CloudEvent:
        return sign(event, self.key, self.key_id)


@dataclass
class ApiDeps:
    log: PostgresEventLog
    authenticator: Authenticator
    #: publishes one command on shiplog.commands and waits for the broker's ack
    publish: Callable[[CloudEvent], Awaitable[None]]
    signer: Signer
    #: take the client address from X-Forwarded-For (behind a proxy you run)
    trust_proxy: bool = False
    #: any of these may operate deployments; empty: any authenticated principal
    operator_roles: frozenset[str] = DEFAULT_OPERATOR_ROLES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
