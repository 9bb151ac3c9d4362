"""The public certificate-verification page: whoever received a
certificate (a bank, a landlord) checks its QR code here. It shows what the
certificate must say — never resident data: the signed payload holds only a
hash of the resident codes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, current_app, render_template, request

from fallback.counter.rendering import print_settings
from fallback.db import get_ops
from fallback.keys import signing_key
from fallback.staff.security import public
from printing.signing import CertificateVerificationError, verify_payload
from printing.verify import verify_file

bp = Blueprint("verify", __name__, url_prefix="/verify", template_folder="templates")

MAX_UPLOAD_BYTES = 2 * 1024 * 1024


def issuance_record(certificate) -> str:
    """What this appliance's records say about the serial."""
    scope = "drill" if certificate.drill else "real"
    row = get_ops().execute(
        "SELECT status, content_digest FROM certificates WHERE scope = ? AND serial = ?", (scope, certificate.serial)
    ).fetchone()
    if row is None:
        return "この発行番号の交付記録はありません。"
    if row[1] != certificate.content_digest:
        return "交付記録と内容が一致しません。"
    return {"rendered": "交付記録と一致しました。", "void": "この発行番号は無効（未交付）です。"}.get(row[0], row[0])


@bp.route("/", methods=["GET", "POST"])
@public
def index():
    config = current_app.config["SONAE"]
    result, error, record = None, None, None
    if request.method == "POST":
        key = signing_key(config).public_key()
        eras = print_settings(config).eras
        try:
            upload = request.files.get("file")
            if upload and upload.filename:
                with tempfile.TemporaryDirectory(prefix="sonae-verify-") as workdir:
                    path = Path(workdir) / "upload"
                    upload.save(path)
                    result = verify_file(path, key, eras=eras).certificate
            elif request.form.get("payload", "").strip():
                result = verify_payload(request.form["payload"], key)
            else:
                error = "証明書のPDFか画像を選ぶか、QRコードの内容を貼り付けてください。"
        except CertificateVerificationError as exc:
            error = str(exc)
        if result is not None:
            record = issuance_record(result)
    statements = result.expected_statements(print_settings(config).eras) if result else None
    return render_template("verify/index.html", statements=statements, error=error, record=record,
                           title="証明書の確認"), (422 if error else 200)
