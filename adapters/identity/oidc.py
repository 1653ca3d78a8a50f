"""OIDC JWTs verified against the issuer's JWKS (PyJWT's ``PyJWKClient``).

Only asymmetric algorithms are accepted (never ``none``, never HS*: a shared-secret
JWT could be minted by anyone who knows the secret, and an algorithm confusion
attack feeds the public key in as one). Issuer, audience and expiry are required
and checked; the principal is the ``sub`` claim (or another configured claim), the
roles a list (or space-separated string) under a configured claim, which may be a
dotted path (``realm_access.roles`` in Keycloak).

``PyJWKClient`` fetches the key set with blocking urllib; it runs in a thread so the
API's event loop never waits on the identity provider.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import jwt

from adapters.identity import Principal, Unauthenticated
from events.errors import AdapterUnavailable

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str
    #: where the roles are (a dotted path into the claims)
    roles_claim: str = "roles"
    #: which claim names the principal: sub, preferred_username or email
    principal_claim: str = "sub"
    algorithms: tuple[str, ...] = ASYMMETRIC
    #: clock skew tolerated on exp / nbf / iat, in seconds
    leeway_s: float = 30.0
    #: how long a fetched key set is trusted before it is fetched again
    jwks_lifespan_s: float = 300.0
    timeout_s: float = 5.0


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def roles_from(claims: dict[str, Any], path: str) -> frozenset[str]:
    value = _claim(claims, path)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


class OidcVerifier:
    """Verifies bearer JWTs of one issuer for one audience."""

    TYPE = "oidc"

    def __init__(self, config: OidcConfig):
        unsafe = [a for a in config.algorithms if a not in ASYMMETRIC]
        if unsafe:
            raise ValueError(f"OIDC algorithms must be asymmetric; refused: {', '.join(unsafe)}")
        self.config = config
        self._jwks = jwt.PyJWKClient(
            config.jwks_url,
            cache_keys=True,
            lifespan=config.jwks_lifespan_s,
            timeout=config.timeout_s,
        )

    async def authenticate(self, credential: str) -> Principal:
        """The principal a valid JWT names; ``Unauthenticated`` with the reason
        otherwise (``AdapterUnavailable`` when the JWKS cannot be fetched)."""
        try:
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, credential)
        except jwt.PyJWKClientConnectionError as exc:
            raise AdapterUnavailable(f"the OIDC key set could not be fetched: {exc}") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(f"jwt signed with a key the issuer does not publish ({exc})") from exc
        except (jwt.DecodeError, jwt.PyJWKError) as exc:
            raise Unauthenticated(f"malformed jwt ({exc})") from exc
        cfg = self.config
        try:
            claims = jwt.decode(
                credential,
                signing_key.key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("jwt bad signature") from exc
        except jwt.ExpiredSignatureError as exc:
            raise self._refusal("jwt expired", credential, signing_key.key) from exc
        except jwt.InvalidAudienceError as exc:
            raise self._refusal("jwt audience mismatch", credential, signing_key.key) from exc
        except jwt.InvalidIssuerError as exc:
            raise self._refusal("jwt issuer mismatch", credential, signing_key.key) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"jwt lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise Unauthenticated("jwt signed with an algorithm not accepted") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid jwt ({type(exc).__name__}: {exc})") from exc
        name = _claim(claims, cfg.principal_claim)
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"jwt names no principal (claim {cfg.principal_claim!r})")
        return Principal(name, roles_from(claims, cfg.roles_claim), via="oidc")

    def _refusal(self, reason: str, credential: str, key: Any) -> Unauthenticated:
        """A refusal naming the principal when the signature itself is good (an
        expired or misaddressed token still says truthfully who it was issued to)."""
        cfg = self.config
        try:
            claims = jwt.decode(
                credential,
                key,
                algorithms=list(cfg.algorithms),
                options={"verify_exp": False, "verify_aud": False, "verify_iss": False},
            )
        except jwt.PyJWTError:
            return Unauthenticated(reason)
        name = _claim(claims, cfg.principal_claim)
        return Unauthenticated(reason, principal=name if isinstance(name, str) and name else None)
