"""Dashboard sessions: a credential of the command API exchanged once for a session.

The browser holds only a random session id, in an ``HttpOnly``, ``SameSite=Strict``
cookie; the credential (API token or OIDC access token) stays in this process and is
checked again on every request, so a revoked or expired token ends the session. Each
session has its own CSRF token, put in every form the dashboard renders and required
on every POST. Sessions live in memory: a restarted process asks to sign in again.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

COOKIE = "shiplog_session"
CSRF_FIELD = "csrf"
#: how long a session lasts, whatever the credential's own expiry (checked too)
LIFETIME = timedelta(hours=8)
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str = field(repr=False)
    credential: str = field(repr=False)
    csrf: str = field(repr=False)
    expires_at: datetime

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf.encode(), (value or "").encode())


class Sessions:
    def __init__(self, lifetime: timedelta = LIFETIME):
        self.lifetime = lifetime
        self._by_id: dict[str, Session] = {}

    def create(self, credential: str, now: datetime) -> Session:
        self._expire(now)
        if len(self._by_id) >= MAX_SESSIONS:
            oldest = min(self._by_id.values(), key=lambda s: s.expires_at)
            self._by_id.pop(oldest.id, None)
        session = Session(
            id=secrets.token_urlsafe(32),
            credential=credential,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + self.lifetime,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None, now: datetime) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None or session.expires_at <= now:
            self._by_id.pop(session_id, None)
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self, now: datetime) -> None:
        for sid in [sid for sid, s in self._by_id.items() if s.expires_at <= now]:
            del self._by_id[sid]
