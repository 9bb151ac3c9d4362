"""The public certificate-verification page: whoever received a
certificate (a bank, a landlord, another office) checks it here. The page
shows what the uploaded certificate's QR codes sign — the content of that
very paper, laid out like it — and names every field whose text differs;
it says the PDF matches only when it is the file issued under its serial
(the one record read: the issued PDF, compared, never shown). It shows
nothing the uploader does not already hold.

Uploads may be hostile: they stay in memory (fallback.app), the file is
bounded by size here and by pages, page size, pixels and time in
printing.verify, and at most MAX_CONCURRENT_CHECKS run at once, at most
MAX_CHECKS_PER_CLIENT of them for one client address, so that one sender
cannot hold every slot; the rest are told to try again (503)."""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager

from flask import Blueprint, current_app, render_template, request

from fallback.counter.rendering import print_settings
from fallback.db import get_ops
from fallback.keys import signing_key
from fallback.staff.security import UPLOAD_LIMIT, public
from fallback.verification import check_file, check_payloads
from printing.signing import CertificateVerificationError, SignedPage
from printing.verify import (
    CLOSING_FIELDS,
    Verification,
    person_field,
    statements,
    what_to_compare,
)
from sync.crypto import KeyFileError

bp = Blueprint("verify", __name__, url_prefix="/verify", template_folder="templates")

MAX_CONCURRENT_CHECKS = 2  # one per core: rendering is CPU work
MAX_CHECKS_PER_CLIENT = 1
BUSY_RETRY_AFTER_S = 10
_checks_lock = threading.Lock()
_checks_by_client: Counter[str] = Counter()

BUSY_MESSAGE = "ただいま確認が混み合っています。10秒ほどしてから、もう一度「確認する」を押してください。"
CANNOT_CHECK_MESSAGE = "ただいま証明書を確認できません。時間をおいてもう一度お試しいただくか、証明書を発行した区役所にお問い合わせください。"
TOO_LARGE_MESSAGE = f"ファイルが大きすぎます（{UPLOAD_LIMIT // (1024 * 1024)}MBまで）。PDFはそのまま、写真は縮小してから送ってください。"


def _page(error: str | None = None, result: Verification | None = None, status: int = 200):
    eras = print_settings(current_app.config["SONAE"]).eras
    return render_template(
        "verify/index.html", title="証明書の確認", error=error, result=result,
        statements=statements(result.pages[0], eras) if result else None, what_to_compare=what_to_compare,
        person_field=person_field, closing=_closing, max_upload_mb=UPLOAD_LIMIT // (1024 * 1024),
    ), status


def _closing(page: SignedPage) -> list[tuple[str, str]]:
    return list(zip(CLOSING_FIELDS, page.closing))


def _check() -> Verification | str:
    """The verification of what was sent, or what to tell the sender."""
    config = current_app.config["SONAE"]
    key, eras = signing_key(config).public_key(), print_settings(config).eras
    # A chosen file, or a photo taken with the phone's camera (its own field).
    upload = next((f for f in (request.files.get("file"), request.files.get("photo")) if f and f.filename), None)
    if upload is not None:
        return check_file(upload.read(), key, get_ops(), eras=eras)
    pasted = [line for line in request.form.get("payload", "").splitlines() if line.strip()]
    if pasted:
        return check_payloads(pasted, key, get_ops(), eras=eras)
    return "証明書のPDFか画像を選ぶか、QRコードの内容を貼り付けてください。"


@bp.route("/", methods=["GET", "POST"])
@public
def index():
    if request.method == "GET":
        return _page()
    with check_slot(request.remote_addr or "") as granted:
        if not granted:
            page, status = _page(BUSY_MESSAGE, status=503)
            return page, status, {"Retry-After": str(BUSY_RETRY_AFTER_S)}
        try:
            outcome = _check()
        except CertificateVerificationError as exc:
            return _page(str(exc), status=422)
        except KeyFileError as exc:  # the sender's certificate is not at fault: IT is told by /readyz and the log
            current_app.logger.error("certificate check impossible: %s", exc)
            return _page(CANNOT_CHECK_MESSAGE, status=503)
    if isinstance(outcome, str):
        return _page(outcome, status=422)
    return _page(result=outcome, status=200 if outcome.valid else 422)


@contextmanager
def check_slot(client: str):
    """Yields whether a check may run now: fewer than MAX_CONCURRENT_CHECKS
    are running, and fewer than MAX_CHECKS_PER_CLIENT of them for `client`."""
    with _checks_lock:
        granted = (sum(_checks_by_client.values()) < MAX_CONCURRENT_CHECKS
                   and _checks_by_client[client] < MAX_CHECKS_PER_CLIENT)
        if granted:
            _checks_by_client[client] += 1
    try:
        yield granted
    finally:
        if granted:
            with _checks_lock:
                _checks_by_client[client] -= 1
                if not _checks_by_client[client]:
                    del _checks_by_client[client]


@bp.errorhandler(413)
def too_large(_error):
    return _page(TOO_LARGE_MESSAGE, status=413)
