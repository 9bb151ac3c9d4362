"""The public certificate check: whoever holds a certificate can verify its
signed QR code at /verify (and with `sonae verify`).

A PDF is said to show what was signed only when it is the very file this
appliance issued under its serial; the issuance records say which. They
also say whether the ward has cancelled the certificate since (書損,
誤交付: fallback.cancellations), which no signature can: a cancelled
certificate checks as not valid however it is shown — PDF, photo or the
codes' text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fallback.counter import cancellations, issuance
from printing.signing import SignedPage
from printing.verify import Verification, verify_document, verify_payloads
from printing.wareki import DEFAULT_ERAS, Era


def check_file(data: bytes, public_key: Ed25519PublicKey, records=None, *, accept_drill: bool = False,
               eras: Sequence[Era] = DEFAULT_ERAS) -> Verification:
    """verify_document, and, given `records` (the issuing appliance's
    operational database), whether a PDF is the file it issued and whether
    the certificate was cancelled."""
    def issued_pdf(page: SignedPage) -> bytes | None:
        return issuance.certificate_pdf(records, "drill" if page.drill else "real", page.serial)

    result = verify_document(data, public_key, accept_drill=accept_drill, issued_pdf=issued_pdf if records is not None else None)
    return _with_cancellation(result, records, eras)


def check_payloads(texts: Sequence[str], public_key: Ed25519PublicKey, records=None, *,
                   eras: Sequence[Era] = DEFAULT_ERAS) -> Verification:
    """verify_payloads (the codes' text, read by a phone), and, given
    `records`, whether the certificate was cancelled."""
    return _with_cancellation(verify_payloads(texts, public_key), records, eras)


def _with_cancellation(result: Verification, records, eras: Sequence[Era]) -> Verification:
    if records is None:
        return result
    for page in result.pages:
        found = cancellations.cancellation_of(records, "drill" if page.drill else "real", page.serial)
        if found is not None:
            return dataclasses.replace(result, withdrawn=found.public_statement(eras))
    return result
