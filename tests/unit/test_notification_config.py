"""notifications.yaml: a bad file is refused with file, line and field, every error at
once; credentials are references only; the example validates and is no pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.notification.config import (
    NOTIFICATIONS_FILE,
    EmailChannel,
    NotificationsConfigInvalid,
    NotificationsFile,
    WebhookChannel,
    load_notifications,
    parse_notifications,
)
from consumers.planning.loader import validate_dir
from consumers.planning.pipeline import SecretRef

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "pipelines"

GOOD = """\
delivery: {attempts: 3, backoff_initial_s: 0.5, max_age: 2h}
channels:
  - name: hook
    kind: webhook
    url: https://hooks.example.com/shiplog
    signing_secret: {secret: {env: HOOK_SECRET}}
  - name: mail
    kind: email
    host: smtp.example.com
    from: shiplog@example.com
    to: [a@example.com]
    username: shiplog
    password: {secret: {file: smtp-password}}
routes:
  - channels: [hook, mail]
    events: [approval.requested]
"""


def test_a_good_file_loads(tmp_path: Path) -> None:
    (tmp_path / NOTIFICATIONS_FILE).write_text(GOOD)
    config = load_notifications(tmp_path)
    hook, mail = config.channels
    assert isinstance(hook, WebhookChannel) and isinstance(hook.signing_secret, SecretRef)
    assert isinstance(mail, EmailChannel) and mail.sender == "shiplog@example.com" and mail.port == 587
    assert config.delivery.attempts == 3 and config.delivery.max_age_delta.total_seconds() == 7200
    assert config.routes[0].events == ["approval.requested"]


def test_no_file_is_nothing_configured(tmp_path: Path) -> None:
    assert load_notifications(tmp_path) == NotificationsFile()
    assert parse_notifications("# nothing yet\n") == (NotificationsFile(), [])


def test_the_example_validates_and_the_pipeline_loader_leaves_it_alone() -> None:
    config = load_notifications(EXAMPLES)
    assert {c.kind for c in config.channels} == {"webhook", "slack", "email"}
    assert not any(c.enabled for c in config.channels)  # `shiplog dev` tells nobody anything
    assert validate_dir(EXAMPLES) == []


BAD = [
    pytest.param(
        "channels:\n  - name: a\n    kind: pager\n",
        (3, "channels.0.kind", "unknown kind 'pager'"),
        id="unknown-kind",
    ),
    pytest.param(
        "channels:\n  - name: a\n    url: http://x\n",
        (2, "channels.0.kind", "missing field 'kind'"),
        id="missing-kind",
    ),
    pytest.param(
        "channels:\n  - name: a\n    kind: webhook\n    url: http://x\n    signing_secret: hunter2\n",
        (5, "channels.0.signing_secret", ""),
        id="secret-given-as-a-value",
    ),
    pytest.param(
        "channels:\n  - name: a\n    kind: slack\n    url: hooks.slack.com/x\n",
        (4, "channels.0.url", "http:// or https://"),
        id="not-a-url",
    ),
    pytest.param(
        "channels:\n  - name: a\n    kind: email\n    host: h\n    from: a@b\n    to: [c@d]\n"
        "    password: {secret: {env: P}}\n",
        (2, "channels.0", "needs both `username` and `password`"),
        id="password-without-username",
    ),
    pytest.param(
        "channels:\n  - name: a\n    kind: email\n    host: h\n    from: a@b\n    to: [c@d]\n"
        "    colour: red\n",
        (7, "channels.0.colour", "unknown field 'colour'"),
        id="unknown-field",
    ),
    pytest.param(
        "channels:\n  - {name: a, kind: slack, url: 'http://x'}\nroutes:\n  - channels: [a, b]\n",
        (4, "routes.0.channels.1", "no channel named 'b'"),
        id="route-to-nowhere",
    ),
    pytest.param(
        "channels:\n  - {name: a, kind: slack, url: 'http://x'}\n  - {name: a, kind: slack, url: 'http://y'}\n",
        (3, "channels.1.name", "defined more than once"),
        id="duplicate-channel",
    ),
    pytest.param(
        "routes:\n  - channels: []\n    events: [deployment.exploded]\n",
        (2, "routes.0.channels", ""),
        id="empty-channels",
    ),
    pytest.param(
        "routes:\n  - channels: [a]\n    events: [deployment.exploded]\n",
        (3, "routes.0.events.0", "deployment.exploded"),
        id="unknown-event-kind",
    ),
    pytest.param(
        "delivery:\n  attempts: 0\n", (2, "delivery.attempts", "greater than or equal to 1"), id="attempts"
    ),
    pytest.param("delivery:\n  max_age: soon\n", (2, "delivery.max_age", "not a duration"), id="max-age"),
    pytest.param("channels: [\n", (2, "", "YAML syntax error"), id="yaml-syntax"),
    pytest.param("- just\n- a list\n", (1, "", "a notifications file is a mapping"), id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_a_bad_file_is_refused_with_file_line_and_field(text: str, expected: tuple[int, str, str]) -> None:
    line, field, message = expected
    config, errors = parse_notifications(text, "/etc/shiplog/notifications.yaml")
    assert config is None
    matching = [e for e in errors if e.field == field]
    assert matching, errors
    error = matching[0]
    assert error.file == "/etc/shiplog/notifications.yaml"
    assert error.line == line
    assert message in error.message
    assert str(error).startswith(f"/etc/shiplog/notifications.yaml:{line}:")


def test_load_raises_every_error_at_once(tmp_path: Path) -> None:
    (tmp_path / NOTIFICATIONS_FILE).write_text(
        "channels:\n  - {name: a, kind: pager}\nroutes:\n  - channels: [a]\n    events: [nope]\n"
    )
    with pytest.raises(NotificationsConfigInvalid) as caught:
        load_notifications(tmp_path)
    assert [(e.line, e.field) for e in caught.value.errors] == [
        (2, "channels.0.kind"),
        (5, "routes.0.events.0"),
    ]
    assert f"{tmp_path / NOTIFICATIONS_FILE}:2:" in str(caught.value)


MAIL = "channels:\n  - {name: a, kind: email, host: h, from: a@b, to: [c@d], username: u,"


@pytest.mark.parametrize(
    "text",
    [
        "channels:\n  - name: a\n    kind: webhook\n    url: http://x\n    signing_secret: s3cr3t-value\n",
        f"{MAIL} password: s3cr3t-value}}\n",
        f"{MAIL} password: [s3cr3t-value]}}\n",
    ],
    ids=["webhook-secret", "smtp-password", "smtp-password-list"],
)
def test_a_secret_value_in_the_file_is_refused_and_never_echoed(text: str) -> None:
    _, errors = parse_notifications(text)
    assert errors
    assert all("s3cr3t-value" not in str(e) for e in errors)
    assert any("as a reference only" in e.message for e in errors)
