"""What the AWS targets share: clients with bounded retries, one error type for a
call that failed for good, and the record of applied steps kept in a resource's tags.

Retries are botocore's ``standard`` mode: throttling (``ThrottlingException``,
``TooManyRequestsException``...), HTTP 5xx and connection errors are retried with
exponential backoff and jitter, ``max_attempts`` attempts in all. What still fails
becomes ``AwsCallFailed`` naming the service, the operation, the error code, the
HTTP status and the attempts made — never the credentials: every message passes
through ``scrub`` first.

Applied steps are recorded as tags of the resource the step changed (the Lambda
function, the ECS service), so a step re-driven after a crash, by this process or
another, finds its result there: key ``shiplog:step:<hash of the step key>``, value
the result's JSON in base64 (tag values allow only letters, digits and ``+-=._:/@``),
with a sequence number so only the newest ``applied_keep`` are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError
from botocore.loaders import create_loader
from botocore.parsers import ResponseParserError

from adapters.targets import StepResult
from adapters.targets.aws.config import RETRY_MODE, AwsTargetConfig
from events.errors import AdapterUnavailable

STEP_TAG_PREFIX = "shiplog:step:"
#: AWS's limit on a tag value
TAG_VALUE_MAX = 256
#: botocore's loader of service models (JSON files), shared so each is read once
_LOADER = create_loader()


class AwsCallFailed(AdapterUnavailable):
    """An AWS API call that failed after botocore's retries, or was refused."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class RolloutFailed(Exception):
    """The rollout did not complete; the message starts with the reason."""


class AwsApi:
    """Clients for one target: a session over the config's credentials (or the SDK's
    chain) and botocore's standard retries, bounded by ``max_attempts``."""

    def __init__(self, config: AwsTargetConfig) -> None:
        self.config = config
        creds = config.credentials
        self._secrets = creds.secrets() if creds is not None else []
        core = AioSession()
        # one loader for every target: service models are parsed once per process
        core.register_component("data_loader", _LOADER)
        self._session = aioboto3.Session(
            botocore_session=core,
            aws_access_key_id=creds.access_key_id if creds else None,
            aws_secret_access_key=creds.secret_access_key.get_secret_value() if creds else None,
            aws_session_token=(
                creds.session_token.get_secret_value() if creds and creds.session_token else None
            ),
            profile_name=config.profile,
        )
        self._botocore_config = AioConfig(
            retries={"mode": RETRY_MODE, "total_max_attempts": config.max_attempts},
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
        )

    @asynccontextmanager
    async def client(self, service: str, region: str | None = None) -> AsyncIterator[Any]:
        """An aiobotocore client of ``service``; construction errors (no region...)
        come out as ``AwsCallFailed``."""
        try:
            factory = self._session.client(
                service,
                region_name=region or self.config.region,
                endpoint_url=self.config.endpoint_url,
                config=self._botocore_config,
            )
            client = await factory.__aenter__()
        except BotoCoreError as exc:
            raise AwsCallFailed(self.scrub(f"{service}: {exc}")) from exc
        try:
            yield client
        finally:
            await factory.__aexit__(None, None, None)

    async def call(self, client: Any, operation: str, **params: Any) -> dict[str, Any]:
        """``client.<operation>(**params)``; raises ``AwsCallFailed`` when it fails
        after the retries (the message says how many attempts were made)."""
        try:
            response: dict[str, Any] = await getattr(client, operation)(**params)
        except ClientError as exc:
            raise self.failure(exc, _api_name(operation)) from None
        except (BotoCoreError, ResponseParserError, OSError) as exc:
            # no answer, or one that could not be read, after the retries
            text = str(exc).splitlines()[0] if str(exc) else ""
            raise AwsCallFailed(self.scrub(f"{_api_name(operation)}: {type(exc).__name__}: {text}")) from None
        return response

    def failure(self, exc: ClientError, operation: str) -> AwsCallFailed:
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or "Unknown")
        status = meta.get("HTTPStatusCode")
        attempts = int(meta.get("RetryAttempts", 0)) + 1
        message = str(error.get("Message") or "").strip()
        text = f"{operation}: {code} (HTTP {status}) after {attempts} attempt(s)"
        return AwsCallFailed(self.scrub(f"{text}: {message}" if message else text), code=code, status=status)

    def scrub(self, text: str) -> str:
        """``text`` with every credential the config holds replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _api_name(operation: str) -> str:
    """``update_alias`` -> ``UpdateAlias``, as AWS names its operations."""
    return "".join(part.title() for part in operation.split("_"))


def is_not_found(exc: AwsCallFailed) -> bool:
    return exc.status == 404 or (exc.code or "").endswith(("NotFoundException", "NotFound"))


# --- the record of applied steps, in tags ---------------------------------------------


def step_tag(key: str) -> str:
    return STEP_TAG_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def encode_result(result: StepResult) -> str:
    """A tag value for the result (the step id is the key's; the detail is dropped
    when it would not fit)."""
    body: dict[str, Any] = {"n": time.time_ns(), "ok": result.ok, "d": result.detail}
    value = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    if len(value) > TAG_VALUE_MAX:
        body["d"] = {"detail": "not recorded (too long for a tag)"}
        value = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    return value


def recorded(tags: Mapping[str, str], key: str, step_id: str) -> StepResult | None:
    """The result recorded for ``key``, marked ``already_applied``; None if none."""
    value = tags.get(step_tag(key))
    if value is None:
        return None
    try:
        body = json.loads(base64.b64decode(value))
        return StepResult(
            step_id=step_id, ok=bool(body["ok"]), already_applied=True, detail=body.get("d") or {}
        )
    except (ValueError, KeyError, TypeError):
        return None


def stale_tags(tags: Mapping[str, str], keep: int) -> list[str]:
    """The step tags beyond the newest ``keep - 1`` (room for one more)."""
    seqs: list[tuple[int, str]] = []
    for name, value in tags.items():
        if not name.startswith(STEP_TAG_PREFIX):
            continue
        try:
            seqs.append((int(json.loads(base64.b64decode(value))["n"]), name))
        except (ValueError, KeyError, TypeError):
            seqs.append((0, name))
    seqs.sort(reverse=True)
    return [name for _, name in seqs[max(keep - 1, 0) :]]


def as_tag_list(tags: Mapping[str, str], *, key: str = "key", value: str = "value") -> list[dict[str, str]]:
    """ECS and ELB spell tags as a list of pairs (``key``/``value`` or ``Key``/``Value``)."""
    return [{key: k, value: v} for k, v in tags.items()]


def from_tag_list(
    tags: Sequence[Mapping[str, str]] | None, *, key: str = "key", value: str = "value"
) -> dict[str, str]:
    return {t[key]: t[value] for t in tags or ()}


def digest(state: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
