"""Identity against real servers: API tokens in PostgreSQL (revoked, expired,
unknown), and OIDC JWTs verified against a JWKS served by a local aiohttp server
with keys generated here. Every refusal is a 401 (or 403) and an event in the log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from adapters.eventlog import PostgresEventLog
from adapters.identity import Unauthenticated
from adapters.identity.oidc import OidcConfig, OidcVerifier, roles_from
from adapters.identity.tokens import PostgresTokenStore
from events.access import TOKENS_STREAM
from events.errors import AdapterUnavailable
from events.registry import REGISTRY
from events.topics import COMMANDS, topic_name
from shiplog.embedded import free_port
from tests.apiutil import Api, awaiting_approval, drain, leaks, log_bodies, running_api

pytestmark = pytest.mark.timeout(60)

ISSUER = "https://idp.example.test/realms/acme"
AUDIENCE = "shiplog"


# -- API tokens --------------------------------------------------------------------------


async def test_a_token_is_stored_only_as_its_hash_listed_and_revoked_by_id(
    eventlog: PostgresEventLog,
) -> None:
    store = PostgresTokenStore(eventlog)
    info, token = await store.create("alice", ["release-manager", "qa", "qa"], None)
    assert token.startswith("shiplog_") and len(token) > 40
    assert info.roles == ("qa", "release-manager") and info.expires_at is None
    principal = await store.authenticate(token)
    assert (principal.name, principal.roles, principal.token_id) == (
        "alice",
        frozenset({"qa", "release-manager"}),
        info.token_id,
    )
    async with eventlog.pool.acquire() as conn:
        [row] = await conn.fetch("SELECT * FROM tokens")
    assert not leaks([token], [repr(dict(row))])

    [listed] = await store.list()
    assert listed.token_id == info.token_id and listed.state(datetime.now(UTC)) == "active"
    assert (await store.revoke(info.token_id)) is not None
    assert (await store.revoke(info.token_id)).revoked_at is not None  # type: ignore[union-attr]
    assert await store.revoke("tok_nope") is None
    with pytest.raises(Unauthenticated, match="token revoked") as refused:
        await store.authenticate(token)
    assert (refused.value.principal, refused.value.token_id) == ("alice", info.token_id)

    # issuing and revoking are in the log, without the token
    issued, revoked = [r.event for r in await eventlog.read_stream(TOKENS_STREAM)]
    assert issued.type_name == "shiplog.access.token_issued" and issued.data["roles"] == [
        "qa",
        "release-manager",
    ]
    assert revoked.type_name == "shiplog.access.token_revoked" and revoked.data["token_id"] == info.token_id
    assert not leaks([token], await log_bodies(eventlog))


@pytest.mark.parametrize("bad_name", ["", "a b", "x,y"])
async def test_a_token_for_a_bad_name_is_refused(eventlog: PostgresEventLog, bad_name: str) -> None:
    from events.errors import InvalidInput

    with pytest.raises(InvalidInput):
        await PostgresTokenStore(eventlog).create(bad_name, [], None)


@pytest.fixture
async def api(eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Api]:
    async with running_api(eventlog, kafka_bootstrap, topic_prefix) as running:
        yield running


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("revoked", "token revoked"),
        ("expired", "token expired"),
        ("unknown", "unknown token"),
        ("missing", "missing bearer token"),
        ("jwt-without-oidc", "no OIDC issuer is configured"),
    ],
)
async def test_a_refused_token_is_401_and_audited_with_what_is_known(
    api: Api, eventlog: PostgresEventLog, kind: str, reason: str
) -> None:
    plan = await awaiting_approval(eventlog)
    token: str | None
    if kind == "revoked":
        token = await api.token("eve", ["admin"])
        [info] = await api.tokens.list()
        await api.tokens.revoke(info.token_id)
    elif kind == "expired":
        token = await api.token("old", ["admin"], expires_in=timedelta(seconds=-5))
    elif kind == "unknown":
        token = "shiplog_" + uuid.uuid4().hex
    elif kind == "jwt-without-oidc":
        token = jwt.encode({"sub": "x"}, "a shared secret of at least thirty-two bytes", algorithm="HS256")
    else:
        token = None
    async with api.client(token) as client:
        answer = await client.post(f"/deployments/{plan.deployment_id}/approve", json={"comment": "x"})
    assert answer.status_code == 401
    assert reason in answer.json()["detail"]
    assert answer.headers["www-authenticate"].startswith("Bearer")
    [refusal] = await api.refusals()
    assert refusal.type == "shiplog.access.refused.v1" and refusal.actor is None
    data = refusal.data
    assert reason in data["reason"] and data["status"] == 401 and data["client"] == "127.0.0.1"
    assert data["path"] == f"/deployments/{plan.deployment_id}/approve" and data["method"] == "POST"
    if kind in ("revoked", "expired"):
        [info] = await api.tokens.list()
        assert data["token_id"] == info.token_id and data["principal"] == info.principal
    else:
        assert "token_id" not in data and "principal" not in data
    if token:
        assert not leaks([token], await log_bodies(eventlog))


# -- OIDC JWTs -----------------------------------------------------------------------------


@dataclass
class Idp:
    """A local identity provider: its JWKS served over HTTP, and its signing keys."""

    jwks_url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    requests: list[str]

    def token(
        self,
        *,
        key: Any = None,
        kid: str = "rsa-1",
        algorithm: str = "RS256",
        expires_in: timedelta = timedelta(minutes=5),
        **claims: Any,
    ) -> str:
        now = datetime.now(UTC)
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-123",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + expires_in,
            "realm_access": {"roles": ["release-manager", "offline_access"]},
            "roles": ["release-manager"],
            **claims,
        }
        return jwt.encode(body, key or self.rsa_key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {
            **RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True),
            "kid": "rsa-1",
            "use": "sig",
            "alg": "RS256",
        },
        {
            **ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True),
            "kid": "ec-1",
            "use": "sig",
            "alg": "ES256",
        },
    ]
    requests: list[str] = []

    async def jwks(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/certs", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Idp(f"http://127.0.0.1:{port}/certs", rsa_key, ec_key, requests)
    finally:
        await runner.cleanup()


def verifier(idp: Idp, **config: Any) -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=idp.jwks_url, **config))


@pytest.fixture
async def oidc_api(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str, idp: Idp
) -> AsyncIterator[Api]:
    async with running_api(
        eventlog, kafka_bootstrap, topic_prefix, oidc=verifier(idp, principal_claim="preferred_username")
    ) as running:
        yield running


async def test_a_jwt_with_the_right_roles_approves_as_its_principal(
    oidc_api: Api,
    idp: Idp,
    eventlog: PostgresEventLog,
    kafka_bootstrap: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plan = await awaiting_approval(eventlog)
    token = idp.token()
    async with oidc_api.client(token) as client:
        answer = await client.post(
            f"/deployments/{plan.deployment_id}/approve", json={"role": "release-manager", "comment": "ok"}
        )
        # an EC key of the same issuer works too; API tokens still do beside JWTs
        ec = await client.get(
            "/approvals/pending",
            headers={"Authorization": f"Bearer {idp.token(key=idp.ec_key, kid='ec-1', algorithm='ES256')}"},
        )
    assert answer.status_code == 202, answer.text
    assert ec.status_code == 200
    [record] = await drain(kafka_bootstrap, [topic_name(COMMANDS, topic_prefix)])
    event = REGISTRY.decode(record.value)
    assert event.actor == "alice" and event.data["roles"] == ["release-manager"]
    assert event.data["role"] == "release-manager"
    assert idp.requests  # the key set was fetched from the identity provider
    assert not leaks([token], await log_bodies(eventlog), caplog.text, [record.value])


@pytest.mark.parametrize(
    ("make", "reason", "principal"),
    [
        pytest.param(
            lambda idp: idp.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "jwt bad signature",
            None,
            id="bad-signature",
        ),
        pytest.param(
            lambda idp: idp.token(aud="another-app"), "jwt audience mismatch", "alice", id="audience"
        ),
        pytest.param(
            lambda idp: idp.token(expires_in=timedelta(minutes=-10)), "jwt expired", "alice", id="expired"
        ),
        pytest.param(
            lambda idp: idp.token(iss="https://evil.test"), "jwt issuer mismatch", "alice", id="issuer"
        ),
        pytest.param(lambda idp: idp.token(kid="rsa-9"), "does not publish", None, id="unknown-key"),
        pytest.param(
            lambda idp: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": datetime.now(UTC) + timedelta(minutes=5)},
                "a shared secret of at least thirty-two bytes",
                algorithm="HS256",
                headers={"kid": "rsa-1"},
            ),
            "algorithm not accepted",
            None,
            id="hs256-confusion",
        ),
        pytest.param(lambda idp: idp.token(exp=None), "jwt lacks the 'exp' claim", None, id="no-expiry"),
    ],
)
async def test_a_bad_jwt_is_401_and_audited(
    oidc_api: Api, idp: Idp, eventlog: PostgresEventLog, make: Any, reason: str, principal: str | None
) -> None:
    plan = await awaiting_approval(eventlog)
    token = make(idp)
    async with oidc_api.client(token) as client:
        answer = await client.post(f"/deployments/{plan.deployment_id}/approve", json={})
    assert answer.status_code == 401, answer.text
    assert reason in answer.json()["detail"]
    [refusal] = await oidc_api.refusals()
    assert reason in refusal.data["reason"] and refusal.data["status"] == 401
    assert refusal.data.get("principal") == principal
    assert not leaks([token], await log_bodies(eventlog))


async def test_a_jwt_without_the_role_it_claims_to_act_in_is_403(
    oidc_api: Api, idp: Idp, eventlog: PostgresEventLog
) -> None:
    plan = await awaiting_approval(eventlog)
    async with oidc_api.client(idp.token(roles=["developer"])) as client:
        answer = await client.post(
            f"/deployments/{plan.deployment_id}/approve", json={"role": "release-manager"}
        )
        pause = await client.post(f"/deployments/{plan.deployment_id}/pause", json={})
    assert answer.status_code == 403 and pause.status_code == 403
    refusals = await oidc_api.refusals()
    assert [(r.data["status"], r.data["principal"]) for r in refusals] == [(403, "alice"), (403, "alice")]


async def test_roles_from_a_nested_claim_and_the_principal_from_sub(idp: Idp) -> None:
    who = await verifier(idp, roles_claim="realm_access.roles").authenticate(idp.token())
    assert who.name == "u-123" and who.roles == {"release-manager", "offline_access"} and who.via == "oidc"
    assert roles_from({"scope_roles": "a b  c"}, "scope_roles") == {"a", "b", "c"}
    assert roles_from({}, "roles") == frozenset()


async def test_an_unreachable_jwks_is_unavailable_not_a_refusal(idp: Idp) -> None:
    broken = OidcVerifier(
        OidcConfig(
            issuer=ISSUER, audience=AUDIENCE, jwks_url=f"http://127.0.0.1:{free_port()}/certs", timeout_s=2
        )
    )
    with pytest.raises(AdapterUnavailable):
        await broken.authenticate(idp.token())


def test_symmetric_algorithms_are_refused_in_the_config() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        OidcVerifier(OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://x", algorithms=("HS256",)))
