"""API tokens in PostgreSQL: issued once, stored only as a SHA-256 hash.

A token is ``shiplog_`` followed by 256 random bits (URL-safe base64): too much
entropy to guess, so a plain hash (no salt, no slow KDF) is what GitHub and most
token stores keep too — and it can be looked up by its index. Each has an id
(``tok_...``) under which it is listed, revoked and named in refusals; the value
itself is shown once, at creation, and stored nowhere.

Issuing and revoking are also recorded as events in the log (``access-tokens``), so
the audit trail shows who held which roles from when to when.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from adapters.eventlog.postgres import PostgresEventLog, unavailable_as_error
from adapters.identity import Principal, Unauthenticated
from events.access import TOKENS_STREAM, TokenIssued, TokenRevoked
from events.errors import InvalidInput
from events.registry import new_event

PREFIX = "shiplog_"
SOURCE = "shiplog/tokens"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenInfo:
    """What is known of a token, without its value."""

    token_id: str
    principal: str
    roles: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.token_id,
            "user": self.principal,
            "roles": list(self.roles),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "state": self.state(now),
        }


_COLUMNS = "token_id, principal, roles, created_at, expires_at, revoked_at"


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        row["token_id"],
        row["principal"],
        tuple(row["roles"]),
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
    )


def _check_name(kind: str, value: str) -> str:
    value = value.strip()
    if not value or any(c.isspace() or c == "," for c in value) or len(value) > 200:
        raise InvalidInput(f"{kind} {value!r} must be non-empty, without spaces or commas")
    return value


class PostgresTokenStore:
    """API tokens in the log's schema (table ``tokens``, migration 4)."""

    TYPE = "postgres"

    def __init__(self, log: PostgresEventLog, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._log = log
        self._clock = clock

    async def create(
        self, principal: str, roles: Sequence[str], expires_at: datetime | None
    ) -> tuple[TokenInfo, str]:
        """Issue a token; returns what is stored and the value — the only time it exists."""
        principal = _check_name("user", principal)
        clean = sorted({_check_name("role", r) for r in roles})
        token, token_id = new_token(), "tok_" + secrets.token_hex(6)
        with unavailable_as_error("token create"):
            row = await self._log.pool.fetchrow(
                f"INSERT INTO tokens (token_id, token_hash, principal, roles, created_at, expires_at)"
                f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
                token_id,
                token_hash(token),
                principal,
                clean,
                self._clock(),
                expires_at,
            )
        info = _info(row)
        await self._record(
            TokenIssued(token_id=token_id, principal=principal, roles=clean, expires_at=expires_at)
        )
        return info, token

    async def revoke(self, token_id: str) -> TokenInfo | None:
        """Revoke a token by id (again: no change); None for an unknown id."""
        with unavailable_as_error("token revoke"):
            row = await self._log.pool.fetchrow(
                f"UPDATE tokens SET revoked_at = coalesce(revoked_at, $2) WHERE token_id = $1"
                f" RETURNING {_COLUMNS}, (revoked_at = $2) AS now_revoked",
                token_id,
                self._clock(),
            )
        if row is None:
            return None
        if row["now_revoked"]:
            await self._record(TokenRevoked(token_id=token_id, principal=row["principal"]))
        return _info(row)

    async def list(self) -> list[TokenInfo]:
        """Every token, oldest first (revoked and expired ones included)."""
        with unavailable_as_error("token list"):
            rows = await self._log.pool.fetch(f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at, token_id")
        return [_info(r) for r in rows]

    async def authenticate(self, credential: str) -> Principal:
        """The principal of a valid token; ``Unauthenticated`` for an unknown,
        revoked or expired one."""
        with unavailable_as_error("token check"):
            row = await self._log.pool.fetchrow(
                f"SELECT {_COLUMNS} FROM tokens WHERE token_hash = $1", token_hash(credential)
            )
        if row is None:
            raise Unauthenticated("unknown token")
        info = _info(row)
        state = info.state(self._clock())
        if state != "active":
            raise Unauthenticated(f"token {state}", principal=info.principal, token_id=info.token_id)
        return Principal(info.principal, frozenset(info.roles), via="token", token_id=info.token_id)

    async def is_active(self, credential: str) -> bool:
        """Whether a token is known and neither revoked nor expired."""
        try:
            await self.authenticate(credential)
        except Unauthenticated:
            return False
        return True

    async def _record(self, data: TokenIssued | TokenRevoked) -> None:
        event = new_event(data, source=SOURCE, subject=data.token_id)
        await self._log.append(TOKENS_STREAM, [event], None)
