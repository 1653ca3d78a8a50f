"""Access to the command API: refusals of unauthenticated or unauthorised requests,
and the issuing and revoking of API tokens.

Each is an event in the log (stream ``access-refusals`` / ``access-tokens``), so an
auditor sees who tried what and was turned away, and who held which roles when.
None of them ever carries a token's value: a token is named by its id only.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from events.base import EventData

REFUSALS_STREAM = "access-refusals"
TOKENS_STREAM = "access-tokens"


class AccessRefused(EventData):
    """The command API turned a request away (401: not authenticated; 403: the
    principal lacks a role the request needs)."""

    TYPE: ClassVar[str] = "shiplog.access.refused"
    VERSION: ClassVar[int] = 1

    #: why, e.g. "missing bearer token", "token revoked", "jwt audience mismatch"
    reason: str
    #: the HTTP status answered (401 or 403)
    status: int
    method: str
    path: str
    #: the client address the request came from (X-Forwarded-For only when trusted)
    client: str | None = None
    #: the principal, when the credential named one (an expired token, a 403)
    principal: str | None = None
    #: the id of the API token presented, when it is a known one — never the token
    token_id: str | None = None


class TokenIssued(EventData):
    """An API token was created (``shiplog token create``)."""

    TYPE: ClassVar[str] = "shiplog.access.token_issued"
    VERSION: ClassVar[int] = 1

    token_id: str
    principal: str
    roles: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


class TokenRevoked(EventData):
    TYPE: ClassVar[str] = "shiplog.access.token_revoked"
    VERSION: ClassVar[int] = 1

    token_id: str
    principal: str
