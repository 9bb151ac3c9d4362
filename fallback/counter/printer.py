"""Handing an issued certificate to the counter's CUPS queue.

The certificate is already issued (its serial is committed and its PDF
stored) when this runs, so a printer problem never loses it: the outcome is
recorded on the copy and shown to the clerk, who can print the PDF from the
browser instead."""

from __future__ import annotations

from fallback import audit
from fallback.counter.issuance import IssuedCopy, record_print_job
from printing.cups import PrintError, PrinterStoppedError, PrintTimeoutError, submit, wait_for_job

# Long enough for a healthy local queue (cups-pdf takes ~0.2 s); a slow
# printer is reported as "processing" rather than holding the clerk up.
WAIT_SECONDS = 5.0


def print_certificate(conn, queue: str, copy: IssuedCopy, pdf: bytes, *, actor: str) -> str:
    """Submit and wait briefly; returns the recorded state: completed,
    processing, stopped or failed."""
    job_id = None
    try:
        job_id = submit(pdf, queue, f"sonae-{copy.scope}-{copy.serial:06d}")
        wait_for_job(job_id, WAIT_SECONDS)
        state, message = "completed", ""
    except PrinterStoppedError as exc:
        state, message = "stopped", str(exc)
    except PrintTimeoutError as exc:
        state, message = "processing", str(exc)
    except PrintError as exc:
        state, message = "failed", str(exc)
    record_print_job(conn, copy.scope, copy.serial, job_id, state)
    audit.record(conn, actor, "print", f"{copy.scope}:{copy.serial}", {"queue": queue, "job": job_id, "state": state, "message": message},
                 drill=copy.scope == "drill")
    return state
