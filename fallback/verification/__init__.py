"""The public certificate check: whoever holds a certificate can verify its
signed QR code at /verify (and with `sonae verify`).

A PDF is said to show what was signed only when it is the very file this
appliance issued under its serial; the issuance records say which.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fallback.counter import issuance
from printing.signing import SignedPage
from printing.verify import Verification, verify_document


def check_file(data: bytes, public_key: Ed25519PublicKey, records=None, *, accept_drill: bool = False) -> Verification:
    """verify_document, and, given `records` (the issuing appliance's
    operational database), whether a PDF is the file it issued."""
    def issued_pdf(page: SignedPage) -> bytes | None:
        return issuance.certificate_pdf(records, "drill" if page.drill else "real", page.serial)

    return verify_document(data, public_key, accept_drill=accept_drill, issued_pdf=issued_pdf if records is not None else None)
