"""Who is asking: bearer credentials of the command API -> an authenticated principal.

Two kinds of credential, behind one small protocol:

- API tokens issued by ``shiplog token create`` (``tokens.PostgresTokenStore``):
  opaque random strings, stored only as a SHA-256 hash, revocable, expiring;
- OIDC JWTs (``oidc.OidcVerifier``), when an issuer is configured: verified against
  the issuer's JWKS, roles from a claim.

A refusal is an ``AccessDenied`` carrying why and, when known, who and which token
(by id) — never the credential itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from events.errors import DomainRefusal


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the name recorded as an event's actor, and roles."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    #: "token" or "oidc"
    via: str = "token"
    #: the API token's id (not its value), for tokens
    token_id: str | None = None

    def holds(self, role: str) -> bool:
        return role in self.roles

    def holds_any(self, roles: frozenset[str] | set[str] | tuple[str, ...]) -> bool:
        return bool(self.roles & set(roles))


class AccessDenied(DomainRefusal):
    """A request turned away; ``status`` is the HTTP status it answers with."""

    status = 401

    def __init__(self, reason: str, *, principal: str | None = None, token_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.principal = principal
        self.token_id = token_id


class Unauthenticated(AccessDenied):
    """No valid credential: missing, unknown, revoked, expired, badly signed."""

    status = 401


class Forbidden(AccessDenied):
    """A valid credential whose principal lacks a role the request needs."""

    status = 403


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> Principal:
        """The principal a bearer credential names; raises ``Unauthenticated`` (or
        ``AdapterUnavailable`` when what it checks against does not answer)."""
        ...


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS: three base64url parts (API tokens have no dots)."""
    return credential.count(".") == 2 and credential.startswith("eyJ")


class BearerAuthenticator:
    """API tokens, and OIDC JWTs when a verifier is configured."""

    def __init__(self, tokens: Authenticator, oidc: Authenticator | None = None):
        self.tokens = tokens
        self.oidc = oidc

    async def authenticate(self, credential: str) -> Principal:
        """The principal of an API token or, with OIDC configured, of a JWT."""
        if not credential:
            raise Unauthenticated("empty bearer token")
        if looks_like_jwt(credential):
            if self.oidc is None:
                raise Unauthenticated("a JWT was presented but no OIDC issuer is configured")
            return await self.oidc.authenticate(credential)
        return await self.tokens.authenticate(credential)


__all__ = [
    "AccessDenied",
    "Authenticator",
    "BearerAuthenticator",
    "Forbidden",
    "Principal",
    "Unauthenticated",
    "looks_like_jwt",
]
