"""How each channel renders a message, and the factory that picks the channel."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import SecretStr

from adapters.notify import (
    Credentials,
    Message,
    SlackNotifier,
    SmtpNotifier,
    WebhookNotifier,
    create_notifier,
    http_outcome,
    verify_signature,
)
from adapters.notify.slack import render
from adapters.notify.smtp import SmtpChannelConfig, compose
from adapters.notify.webhook import HttpChannelConfig
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

MESSAGE = Message(
    id="0b8f2c1e-2d5c-5a1e-9a51-3c1f0d6c9a10",
    event_type="shiplog.approval.requested.v2",
    title="Approval needed: checkout 1.4.2 to production",
    text="2 approvals needed <now> & soon",
    facts=(("Service", "checkout"), ("Environment", "production")),
    body={"delivery": "0b8f2c1e-2d5c-5a1e-9a51-3c1f0d6c9a10", "title": "Approval needed", "n": 1},
)


def test_the_webhook_body_is_signed_with_hmac_sha256_of_the_exact_bytes() -> None:
    notifier = WebhookNotifier(HttpChannelConfig(url="http://x/y"), Credentials(SecretStr("k3y")))
    body, headers = notifier.render(MESSAGE)
    assert json.loads(body) == MESSAGE.body
    expected = "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert headers["X-Shiplog-Signature-256"] == expected
    assert headers["X-Shiplog-Delivery"] == MESSAGE.id
    assert headers["X-Shiplog-Event"] == "shiplog.approval.requested.v2"
    assert verify_signature("k3y", body, expected)
    assert not verify_signature("other", body, expected)
    assert not verify_signature("k3y", body + b" ", expected)


def test_slack_gets_text_and_blocks_escaped() -> None:
    payload = render(MESSAGE)
    assert payload["text"].startswith("Approval needed: checkout 1.4.2 to production\n")
    assert "&lt;now&gt; &amp; soon" in payload["text"]
    header, section, fields, context = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": MESSAGE.title}}
    assert section["text"] == {"type": "mrkdwn", "text": "2 approvals needed &lt;now&gt; &amp; soon"}
    assert fields["fields"][0] == {"type": "mrkdwn", "text": "*Service*\ncheckout"}
    assert MESSAGE.id in context["elements"][0]["text"]


def test_the_email_is_plain_text_with_a_subject_and_the_delivery_id() -> None:
    config = SmtpChannelConfig(
        host="h", sender="shiplog@example.com", recipients=("a@example.com", "b@example.com")
    )
    mail = compose(MESSAGE, config)
    assert mail["Subject"] == "[shiplog] Approval needed: checkout 1.4.2 to production"
    assert mail["From"] == "shiplog@example.com"
    assert mail["To"] == "a@example.com, b@example.com"
    assert mail["Message-ID"] == f"<{MESSAGE.id}@shiplog>"
    assert mail["X-Shiplog-Delivery"] == MESSAGE.id
    assert mail.get_content_type() == "text/plain"
    content = mail.get_content()
    assert "2 approvals needed <now> & soon" in content
    assert "Service:     checkout" in content


OUTCOMES = [
    (200, None),
    (204, None),
    (500, AdapterUnavailable),
    (503, AdapterUnavailable),
    (429, AdapterUnavailable),
    (408, AdapterUnavailable),
    (400, AdapterRejected),
    (401, AdapterRejected),
    (404, AdapterRejected),
    (410, AdapterRejected),
]


@pytest.mark.parametrize(("status", "error"), OUTCOMES)
def test_an_http_answer_is_sent_retried_or_final(status: int, error: type[Exception] | None) -> None:
    if error is None:
        assert http_outcome(status, "", "the webhook") == f"HTTP {status}"
    else:
        with pytest.raises(error, match=f"HTTP {status}"):
            http_outcome(status, "", "the webhook")


def test_the_factory_refuses_an_unknown_kind_and_never_echoes_settings() -> None:
    with pytest.raises(InvalidInput, match="unknown notification channel kind 'pager'"):
        create_notifier("pager", {}, Credentials())
    with pytest.raises(InvalidInput) as caught:
        create_notifier(
            "slack", {"url": "https://hooks.slack.com/services/T0/B0/t0ken", "bogus": 1}, Credentials()
        )
    assert "t0ken" not in str(caught.value)
    assert isinstance(create_notifier("slack", {"url": "http://x"}, Credentials()), SlackNotifier)
    assert isinstance(
        create_notifier("email", {"host": "h", "sender": "a@b", "recipients": ["c@d"]}, Credentials()),
        SmtpNotifier,
    )
    with pytest.raises(InvalidInput, match="signing secret"):
        create_notifier("webhook", {"url": "http://x"}, Credentials())


def test_credentials_do_not_show_in_reprs() -> None:
    creds = Credentials(SecretStr("hunter2"))
    config = HttpChannelConfig(url="https://hooks.slack.com/services/T0/B0/t0ken")
    assert "hunter2" not in repr(creds) and "t0ken" not in repr(config)
