"""Getting a message to IT: a JSON POST to a webhook (retried, because the
moment something is wrong is also the moment the network may be shaky) and
an e-mail over SMTP. A channel that is not configured is skipped; a channel
that fails is recorded, never raised — one dead channel must not silence
the other.
"""

from __future__ import annotations

import logging
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import requests

from fallback.config import Config
from fallback.ops import now

log = logging.getLogger("sonae.monitoring")

WEBHOOK, EMAIL = "webhook", "email"
# Waits between webhook attempts; doubles each time (1 s, 2 s, 4 s ...).
WEBHOOK_FIRST_BACKOFF_S = 1.0
SMTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Message:
    subject: str
    text: str  # the whole message as plain Japanese text
    payload: dict  # the structured form, for the webhook


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str | None


def post_webhook(config: Config, message: Message) -> Delivery:
    alerts = config["alerts"]
    tries, attempts, error = 1 + max(0, alerts["webhook_retries"]), 0, None
    body = {**message.payload, "subject": message.subject, "text": message.text}
    for attempt in range(1, tries + 1):
        attempts = attempt
        try:
            response = requests.post(alerts["webhook_url"], json=body, timeout=alerts["webhook_timeout_s"])
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}"
        else:
            if response.status_code < 300:
                return Delivery(WEBHOOK, True, attempts, None)
            error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the receiver refuses this message; resending will not help
        if attempt < tries:
            time.sleep(WEBHOOK_FIRST_BACKOFF_S * 2 ** (attempt - 1))
    log.warning("webhook delivery failed after %d attempt(s): %s", attempts, error)
    return Delivery(WEBHOOK, False, attempts, error)


def send_mail(config: Config, subject: str, text: str) -> Delivery:
    alerts = config["alerts"]
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = alerts["mail_from"]
    mail["To"] = alerts["mail_to"]
    mail["Date"] = format_datetime(now())
    mail["Message-ID"] = make_msgid(domain="sonae.local")
    mail.set_content(text, charset="utf-8")
    try:
        with smtplib.SMTP(alerts["smtp_host"], alerts["smtp_port"], timeout=SMTP_TIMEOUT_S) as smtp:
            smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("mail delivery failed: %s", type(exc).__name__)
        return Delivery(EMAIL, False, 1, f"{type(exc).__name__}: {exc}"[:300])
    return Delivery(EMAIL, True, 1, None)


def mail_configured(config: Config) -> bool:
    return bool(config["alerts"]["smtp_host"] and config["alerts"]["mail_to"])


def deliver(config: Config, message: Message) -> list[Delivery]:
    """Send on every configured channel; return what happened on each."""
    deliveries = []
    if config["alerts"]["webhook_url"]:
        deliveries.append(post_webhook(config, message))
    if mail_configured(config):
        deliveries.append(send_mail(config, message.subject, message.text))
    return deliveries
