"""``<SHIPLOG_CONFIG>/notifications.yaml``: the channels people are told on, and which
events go to which of them.

```yaml
delivery: {attempts: 4, backoff_initial_s: 1, backoff_cap_s: 30, timeout_s: 10, max_age: 24h}
channels:
  - {name: ops, kind: webhook, url: https://hooks.example.com/shiplog,
     signing_secret: {secret: {env: SHIPLOG_WEBHOOK_SECRET}}}
  - {name: releases, kind: slack, url: {secret: {env: SLACK_RELEASES_URL}}}
  - {name: managers, kind: email, host: smtp.example.com, port: 587, starttls: true,
     from: shiplog@example.com, to: [release-managers@example.com],
     username: shiplog, password: {secret: {file: /run/secrets/smtp-password}}}
routes:
  - {channels: [releases], events: [approval.requested, approval.reminded],
     environments: [production]}
```

Credentials are secret references only (``{secret: {env: NAME}}`` or ``{secret:
{file: PATH}}``, as in pipelines), resolved at delivery. Every problem is a
``ConfigError`` with file, line and field, found the way the pipeline loader finds
them; ``load_notifications`` raises them all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node

from consumers.planning.loader import (
    ConfigError,
    _at,
    _compose,
    _duplicate_keys,
    _error_at,
    _from_pydantic,
    _locate,
)
from consumers.planning.pipeline import NAME_PATTERN, SecretRef, Value, parse_duration
from events.errors import InvalidInput

NOTIFICATIONS_FILE = "notifications.yaml"

# Defaults, in one place.
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_CAP_S = 30.0
DEFAULT_TIMEOUT_S = 10.0
#: events older than this are not notified about (a consumer catching up on a
#: long history, a relay re-publishing on start, must not page people about the past)
DEFAULT_MAX_AGE = "24h"

#: what a route may name in ``events``: the short type names of the events people
#: are told about (pending approvals, reminders, expiries and outcomes)
EventKind = Literal[
    "approval.requested",
    "approval.reminded",
    "approval.expired",
    "approval.voided",
    "deployment.approved",
    "deployment.denied",
    "deployment.rejected",
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolled_back",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class DeliveryPolicy(_Config):
    """How hard a notification is tried before it is recorded as failed."""

    attempts: int = Field(default=DEFAULT_ATTEMPTS, ge=1, le=20, description="tries per notification")
    backoff_initial_s: float = Field(
        default=DEFAULT_BACKOFF_INITIAL_S, ge=0, description="wait after the first failed try; doubles"
    )
    backoff_cap_s: float = Field(
        default=DEFAULT_BACKOFF_CAP_S, ge=0, description="longest wait between tries"
    )
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, description="per try")
    max_age: str = Field(default=DEFAULT_MAX_AGE, description="events older than this are not notified about")

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def max_age_delta(self) -> timedelta:
        return parse_duration(self.max_age)


class _Channel(_Config):
    name: str = Field(pattern=NAME_PATTERN, description="what routes and recorded events call it")
    enabled: bool = Field(default=True, description="false: routes to it are kept but send nothing")
    attempts: int | None = Field(default=None, ge=1, le=20, description="overrides delivery.attempts")
    timeout_s: float | None = Field(default=None, gt=0, description="overrides delivery.timeout_s")


class _HttpChannel(_Channel):
    url: Value = Field(description="where to POST; a secret reference when it holds a token")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            raise ValueError("a URL starting with http:// or https://, or a {secret: ...} reference")
        return value


class WebhookChannel(_HttpChannel):
    """A generic webhook: JSON, signed with HMAC-SHA256 under ``signing_secret``."""

    kind: Literal["webhook"]
    signing_secret: SecretRef = Field(description="the HMAC key, as a secret reference")


class SlackChannel(_HttpChannel):
    """A Slack incoming webhook; its URL is its credential (best a secret reference)."""

    kind: Literal["slack"]


class EmailChannel(_Channel):
    """E-mail over SMTP, plain text."""

    kind: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, gt=0, lt=65536)
    starttls: bool = Field(default=True, description="upgrade with STARTTLS (port 587)")
    tls: bool = Field(default=False, description="TLS from the first byte (port 465)")
    sender: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$|^.*<[^@\s]+@[^@\s]+>$")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)
    username: str | None = Field(default=None, min_length=1)
    password: SecretRef | None = Field(default=None, description="as a secret reference")

    @model_validator(mode="after")
    def _consistent(self) -> EmailChannel:
        if self.tls and self.starttls:
            raise ValueError("`tls` and `starttls` exclude each other (set starttls: false for port 465)")
        if (self.username is None) != (self.password is None):
            raise ValueError("an SMTP login needs both `username` and `password`")
        return self


Channel = Annotated[WebhookChannel | SlackChannel | EmailChannel, Field(discriminator="kind")]


class Route(_Config):
    """Events of these kinds, services and environments go to these channels. An
    omitted filter matches everything; services and environments take shell-style
    patterns (``checkout-*``)."""

    channels: list[str] = Field(min_length=1)
    events: list[EventKind] | None = Field(default=None, description="omitted: every kind")
    services: list[str] | None = Field(default=None, description="omitted: every service")
    environments: list[str] | None = Field(default=None, description="omitted: every environment")


class NotificationsFile(_Config):
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    channels: list[Channel] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    def channel(self, name: str) -> WebhookChannel | SlackChannel | EmailChannel | None:
        return next((c for c in self.channels if c.name == name), None)


class NotificationsConfigInvalid(InvalidInput):
    """notifications.yaml has errors; ``errors`` holds every one."""

    def __init__(self, errors: Sequence[ConfigError]):
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in the notifications config:\n{lines}")


def load_notifications(directory: str | Path) -> NotificationsFile:
    """The notifications config of a config directory; nothing configured when it has
    no ``notifications.yaml``. Raises ``NotificationsConfigInvalid`` with every error."""
    config, errors = _load(Path(directory))
    if errors:
        raise NotificationsConfigInvalid(errors)
    return config or NotificationsFile()


def validate_notifications(directory: str | Path) -> list[ConfigError]:
    return _load(Path(directory))[1]


def _load(directory: Path) -> tuple[NotificationsFile | None, list[ConfigError]]:
    path = directory / NOTIFICATIONS_FILE
    if not path.exists():
        return NotificationsFile(), []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigError(file=str(path), message=f"cannot read: {exc}")]
    return parse_notifications(text, str(path))


def parse_notifications(
    text: str, file: str = NOTIFICATIONS_FILE
) -> tuple[NotificationsFile | None, list[ConfigError]]:
    """One notifications file's text: the config (None when invalid) and its errors."""
    try:
        root, data = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return None, [_error_at(file, mark, (), f"YAML syntax error: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:
        return None, [ConfigError(file=file, message=f"YAML syntax error: {exc}")]
    if root is None:
        return NotificationsFile(), []  # only comments: nothing configured
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        return None, [_at(file, root, (), "a notifications file is a mapping with `channels` and `routes`")]
    errors = _duplicate_keys(file, root, ())
    try:
        config: NotificationsFile | None = NotificationsFile.model_validate(data)
    except ValidationError as exc:
        config = None
        errors += [_pydantic_error(file, root, err) for err in exc.errors()]
    if config is not None:
        errors += _references(file, root, config)
    if errors:
        return None, sorted(errors, key=lambda e: (e.line or 0, e.column or 0, e.field))
    return config, []


#: fields that hold credentials (or may): an error about them never echoes the input
CREDENTIAL_FIELDS = frozenset({"signing_secret", "password", "url"})


def _pydantic_error(file: str, root: Node, err: ErrorDetails) -> ConfigError:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if CREDENTIAL_FIELDS.intersection(map(str, err["loc"])):
        if kind in ("model_type", "model_attributes_type", "dict_type") and "url" not in err["loc"]:
            path, mark = _locate(root, err["loc"], missing=False)
            message = (
                "a credential is given as a reference only: {secret: {env: NAME}} or {secret: {file: PATH}}"
            )
            return _error_at(file, mark, path, message)
        err = {**err, "input": None}
    if kind in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator") == "'kind'":
        path, mark = _locate(root, (*err["loc"], "kind"), missing=True)
        if kind == "union_tag_not_found":
            message = "missing field 'kind' (webhook, slack or email)"
        else:
            message = f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        return _error_at(file, mark, path, message)
    return _from_pydantic(file, root, err)


def _references(file: str, root: Node, config: NotificationsFile) -> list[ConfigError]:
    """What the models cannot see alone: duplicate channel names, routes to nowhere."""
    errors: list[ConfigError] = []
    first: dict[str, int] = {}
    for i, channel in enumerate(config.channels):
        if channel.name in first:
            errors.append(
                _at(
                    file,
                    root,
                    ("channels", i, "name"),
                    f"channel {channel.name!r} is defined more than once "
                    f"(first as channels.{first[channel.name]})",
                )
            )
        else:
            first[channel.name] = i
    for i, route in enumerate(config.routes):
        for j, name in enumerate(route.channels):
            if name not in first:
                known = ", ".join(sorted(first)) or "none defined"
                errors.append(
                    _at(
                        file,
                        root,
                        ("routes", i, "channels", j),
                        f"no channel named {name!r} (known: {known})",
                    )
                )
    return errors
