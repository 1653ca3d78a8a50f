"""E-mail over SMTP (aiosmtplib): a plain-text message per notification.

The ``Message-ID`` is derived from the notification id, and ``X-Shiplog-Delivery``
carries it too, so a mail a crash made us send twice is recognisably the same one.
SMTP replies 4xx are temporary (another attempt), 5xx final.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.notify.base import DEFAULT_TIMEOUT_S, Credentials, Message
from adapters.notify.webhook import DELIVERY_HEADER, EVENT_HEADER
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

SUBJECT_PREFIX = "[shiplog]"
MESSAGE_ID_DOMAIN = "shiplog"


class SmtpChannelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=587, gt=0, lt=65536)
    #: upgrade the connection with STARTTLS (port 587)
    starttls: bool = True
    #: TLS from the first byte (port 465)
    tls: bool = False
    sender: str = Field(min_length=3)
    recipients: tuple[str, ...] = Field(min_length=1)
    username: str | None = None
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)

    @model_validator(mode="after")
    def _one_tls(self) -> SmtpChannelConfig:
        if self.tls and self.starttls:
            raise ValueError("`tls` (implicit TLS) and `starttls` exclude each other")
        return self


def compose(message: Message, config: SmtpChannelConfig) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = config.sender
    mail["To"] = ", ".join(config.recipients)
    mail["Subject"] = f"{SUBJECT_PREFIX} {message.title}"
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = f"<{message.id}@{MESSAGE_ID_DOMAIN}>"
    mail[DELIVERY_HEADER] = message.id
    mail[EVENT_HEADER] = message.event_type
    width = max((len(label) for label, _ in message.facts), default=0)
    facts = "\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in message.facts)
    body = "\n\n".join(part for part in (message.text, facts) if part)
    mail.set_content(f"{body}\n\n-- \nshiplog · {message.event_type} · delivery {message.id}\n")
    return mail


def _refused(code: int, text: str, what: str) -> Exception:
    detail = f"the SMTP server refused {what}: {code} {text}".strip()
    return AdapterUnavailable(detail) if 400 <= code < 500 else AdapterRejected(detail)


class SmtpNotifier:
    TYPE: ClassVar[str] = "email"

    def __init__(self, config: SmtpChannelConfig, credentials: Credentials, **_: object):
        if (config.username is None) != (credentials.secret is None):
            raise InvalidInput("an SMTP login needs both a username and a password")
        self._config = config
        self._credentials = credentials

    async def post(self, message: Message) -> str:
        config = self._config
        password = self._credentials.secret
        try:
            _, reply = await aiosmtplib.send(
                compose(message, config),
                sender=config.sender,
                recipients=list(config.recipients),
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=password.get_secret_value() if password is not None else None,
                use_tls=config.tls,
                start_tls=config.starttls,
                timeout=config.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            first = exc.recipients[0] if exc.recipients else None
            what = f"{len(codes)} recipient(s)"
            if first is not None:
                raise _refused(max(codes), first.message, what) from exc
            raise AdapterRejected(f"the SMTP server refused {what}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            # the server's text may echo what was sent; the code says enough
            raise _refused(exc.code, "authentication failed", "the login") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _refused(exc.code, exc.message, "the message") from exc
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise AdapterUnavailable(f"the SMTP server did not answer within {config.timeout_s:g}s") from exc
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            raise AdapterUnavailable(f"the SMTP server is unreachable: {type(exc).__name__}: {exc}") from exc
        except aiosmtplib.SMTPException as exc:
            raise AdapterRejected(f"SMTP: {type(exc).__name__}: {exc}") from exc
        return reply.strip() or "accepted"
