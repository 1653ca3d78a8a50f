"""Identity wiring of the composition root: the command-signing key, the API's
authenticator, and the admin token `shiplog dev` issues (the CLI's side is in
``shiplog.apiclient``).

The key is ``SHIPLOG_COMMAND_KEY`` when set; otherwise a random one in
``$SHIPLOG_HOME/command.key`` (mode 0600), created by whichever process needs it
first — so `shiplog dev`, and every `shiplog run ...` sharing a SHIPLOG_HOME, sign
and verify with the same key. Copy it into SHIPLOG_COMMAND_KEY for processes on
other hosts. It never goes into an event, a topic or a log line.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import secrets
from pathlib import Path

from adapters.eventlog import PostgresEventLog
from adapters.identity import BearerAuthenticator
from adapters.identity.oidc import OidcConfig, OidcVerifier
from adapters.identity.tokens import PostgresTokenStore
from events.errors import InvalidInput
from events.signature import key_id_for
from shiplog.settings import COMMAND_KEY_FILE, DEV_TOKEN_FILE, Settings

log = logging.getLogger(__name__)

#: roles of the token `shiplog dev` issues for the person running it
DEV_TOKEN_ROLES = ("admin",)


def _write_private(path: Path, text: str, *, exclusive: bool) -> bool:
    """Write a file readable by its owner only, atomically. ``exclusive``: only if
    it does not exist yet (returns False when another process was first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic, and fails if the file exists
            return True
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def command_key(settings: Settings) -> tuple[str, bytes]:
    """(key id, key) the API signs with."""
    if settings.command_key is not None:
        key = settings.command_key.get_secret_value().strip().encode()
        if not key:
            raise InvalidInput("SHIPLOG_COMMAND_KEY is set but empty")
        return key_id_for(key), key
    path = settings.home / COMMAND_KEY_FILE
    if not path.exists() and _write_private(path, secrets.token_hex(32) + "\n", exclusive=True):
        log.warning(
            "SHIPLOG_COMMAND_KEY is not set: made a new command key in %s. Processes that do not "
            "share this SHIPLOG_HOME (other hosts, containers) need the same key in SHIPLOG_COMMAND_KEY, "
            "or they refuse the API's commands",
            path,
        )
    key = path.read_text().strip().encode()
    if not key:
        raise InvalidInput(f"{path} is empty: remove it (a new key is made) or set SHIPLOG_COMMAND_KEY")
    return key_id_for(key), key


def verifying_keys(settings: Settings) -> dict[str, bytes]:
    """key id -> key, for the consumers' verification of commands."""
    key_id, key = command_key(settings)
    return {key_id: key}


def operator_roles(settings: Settings) -> frozenset[str]:
    return frozenset(r.strip() for r in settings.api_operator_roles.split(",") if r.strip())


def authenticator(settings: Settings, log: PostgresEventLog) -> BearerAuthenticator:
    """API tokens from the log's database; OIDC JWTs too when an issuer is set."""
    oidc = None
    if settings.oidc_issuer:
        if not settings.oidc_audience or not settings.oidc_jwks_url:
            raise InvalidInput("SHIPLOG_OIDC_ISSUER needs SHIPLOG_OIDC_AUDIENCE and SHIPLOG_OIDC_JWKS_URL")
        oidc = OidcVerifier(
            OidcConfig(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                jwks_url=settings.oidc_jwks_url,
                roles_claim=settings.oidc_roles_claim,
                principal_claim=settings.oidc_principal_claim,
            )
        )
    return BearerAuthenticator(PostgresTokenStore(log), oidc)


def os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "admin"


async def ensure_dev_token(settings: Settings, log: PostgresEventLog) -> Path:
    """The admin token `shiplog dev` keeps for the person running it, in
    ``$SHIPLOG_HOME/admin.token`` (0600): issued once, again only if it stopped
    working (revoked, or a different database)."""
    path = settings.home / DEV_TOKEN_FILE
    store = PostgresTokenStore(log)
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing and await store.is_active(existing):
            return path
    _, token = await store.create(os_user(), DEV_TOKEN_ROLES, expires_at=None)
    _write_private(path, token + "\n", exclusive=False)
    return path
