"""Authentication and authorisation of API requests, and the audit of refusals.

Every endpoint but ``/healthz`` and the OpenAPI documents needs a bearer credential.
A refusal answers 401 (no valid credential) or 403 (a known principal lacking a
role), and is appended to the log as ``shiplog.access.refused`` in the stream
``access-refusals`` — with the reason, the request line, the client address and,
when known, the principal and the token's id; never the credential.
"""

from __future__ import annotations

import logging
from typing import Annotated, NoReturn

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.identity import AccessDenied, Forbidden, Principal, Unauthenticated
from events.access import REFUSALS_STREAM, AccessRefused
from events.registry import new_event
from producers.api.deps import ApiDeps

log = logging.getLogger(__name__)

SOURCE = "shiplog/api"
MAX_AUDITED_PATH = 500


bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `shiplog token create`, or an OIDC access token (JWT) "
    "of the configured issuer.",
)


def client_address(request: Request, trust_proxy: bool) -> str | None:
    """The caller's address; behind a trusted proxy, the last X-Forwarded-For entry
    (the address the proxy itself saw — earlier entries are the client's to write)."""
    if trust_proxy:
        forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        if forwarded:
            return forwarded[-1]
    return request.client.host if request.client else None


def _deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


async def refuse(request: Request, denied: AccessDenied) -> NoReturn:
    """Audit a refusal, then answer it."""
    deps = _deps(request)
    client = client_address(request, deps.trust_proxy)
    event = new_event(
        AccessRefused(
            reason=denied.reason,
            status=denied.status,
            method=request.method,
            path=request.url.path[:MAX_AUDITED_PATH],
            client=client,
            principal=denied.principal,
            token_id=denied.token_id,
        ),
        source=SOURCE,
        subject="api",
        # a 403's principal is authenticated: it is who acted
        actor=denied.principal if isinstance(denied, Forbidden) else None,
    )
    try:
        await deps.log.append(REFUSALS_STREAM, [event], None)
    except Exception as exc:  # the refusal stands even when its record cannot be written
        log.error("could not record an access refusal (%s): %s", denied.reason, exc)
    log.warning(
        "refused %s %s from %s: %s (%s)",
        request.method,
        request.url.path[:MAX_AUDITED_PATH],
        client,
        denied.reason,
        denied.status,
    )
    headers = {"WWW-Authenticate": 'Bearer realm="shiplog"'} if denied.status == 401 else None
    raise HTTPException(denied.status, detail=denied.reason, headers=headers)


async def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The principal of the request's bearer credential (401, audited, otherwise)."""
    if credentials is None:
        await refuse(request, Unauthenticated("missing bearer token"))
    try:
        return await _deps(request).authenticator.authenticate(credentials.credentials)
    except AccessDenied as denied:
        await refuse(request, denied)


async def operator(request: Request, who: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """An authenticated principal allowed to operate deployments (403 otherwise)."""
    roles = _deps(request).operator_roles
    if roles and not who.holds_any(roles):
        await refuse(
            request,
            Forbidden(
                f"operating deployments needs one of the roles {', '.join(sorted(roles))}",
                principal=who.name,
                token_id=who.token_id,
            ),
        )
    return who


async def require_role(request: Request, who: Principal, role: str) -> None:
    """403 (audited) unless the principal holds ``role`` — the role it says it acts in."""
    if not who.holds(role):
        await refuse(
            request,
            Forbidden(
                f"{who.name} does not hold the role {role!r}", principal=who.name, token_id=who.token_id
            ),
        )


Authenticated = Annotated[Principal, Depends(authenticated)]
Operator = Annotated[Principal, Depends(operator)]
