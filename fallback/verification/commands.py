"""`sonae verify FILE`: the certificate check from the console, for a
certificate received by post or a scan handed in at another office.

Offline, like /verify: the QR codes say what the paper must say. On the
issuing appliance (no --public-key) it also says what the issuance records
hold for the serial, that the certificate issued under it signs the same
pages, whether the ward has cancelled it since (then NOT VALID, however it
checks otherwise) and whether a PDF is the very file issued: only that
file is VALID outright. Any other whose signatures hold and whose text matches is
SIGNATURE VALID, to be compared by eye like a scan: a text layer can match
while the page shows something else drawn over it."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fallback.cli_support import config as load_config
from fallback.counter.rendering import print_settings
from fallback.keys import signing_key
from fallback.ops import open_ops
from fallback.verification import check_file
from printing.signing import CertificateVerificationError, SignedPage
from printing.verify import NO_ISSUED_FILE, NOT_AS_ISSUED, Verification, statements, verify_document, what_to_compare
from sync.contract import public_key_from_b64

# Exit statuses: 0 VALID (the very file issued), 1 NOT VALID, 3 SIGNATURE
# VALID — the signatures hold and the content is to be compared by eye —
# and 4 for a drill's certificate shown with --accept-drill, whatever it
# checks as: never a real certificate, so never a script's pass.
EXIT_COMPARE_BY_EYE = 3
EXIT_DRILL = 4


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", help="The issuing appliance's public key (base64); default: this appliance's own.")
@click.option("--accept-drill", is_flag=True, help="Show a drill certificate's contents instead of refusing it.")
def verify(file, public_key, accept_drill):
    """Check a certificate PDF or a scanned page: each page's QR signature,
    and for a PDF every signed field against the printed text."""
    config = load_config()
    key: Ed25519PublicKey = public_key_from_b64(public_key) if public_key else signing_key(config).public_key()
    records = None if public_key else open_ops(config)
    try:
        result = check_file(file.read_bytes(), key, records, accept_drill=accept_drill, eras=print_settings(config).eras)
    except CertificateVerificationError as exc:
        raise click.ClickException(f"NOT VALID: {exc}") from exc
    failures = _verdict_lines(result)
    _echo_signed(result, print_settings(config).eras)
    if records is not None:
        failures += _issuance_lines(config, records, result)
    if failures:
        raise click.ClickException(f"NOT VALID: {len(failures)} problem(s), listed above")
    if result.drill:
        raise SystemExit(EXIT_DRILL)
    if not result.as_issued:
        # A script reading the status must not take "compare by eye" for a pass.
        raise SystemExit(EXIT_COMPARE_BY_EYE)


def _verdict_lines(result: Verification) -> list[str]:
    """Print VALID or one NOT VALID line per problem; return the problems."""
    failures = [f"cancelled by the issuing ward: {result.withdrawn}"] if result.withdrawn else []
    failures += [f"page {d.page}: {d.field} differs from the signed 「{d.signed}」" for d in result.differences]
    failures += list(result.problems)
    for failure in failures:
        click.echo(f"NOT VALID: {failure}")
    if failures:
        return failures
    drill = " (drill — not a real certificate)" if result.drill else ""
    if result.as_issued:
        click.echo(f"VALID{drill}: the file is the very PDF this appliance issued as {result.serial:06d}, "
                   "and every page's QR signature holds")
        return []
    click.echo(f"SIGNATURE VALID{drill}: every page's QR signature holds; {_why_by_eye(result)}:")
    click.echo(f"  まず、証明書の発行番号が {result.pages[0].serial_text} であることを確かめてください（同じ請求で交付した別の通は、発行番号だけが違います）。")
    click.echo(f"  {result.why_compare_by_eye}")
    for page in result.pages:
        click.echo(f"  {what_to_compare(page)}")
    if result.seal_to_compare:
        click.echo(f"  {result.seal_to_compare}")
    return []


def _why_by_eye(result: Verification) -> str:
    if not result.text_checked:
        return "no text layer (a scan) — compare the paper by eye"
    why = {
        NOT_AS_ISSUED: "the file is not the PDF this appliance issued",
        NO_ISSUED_FILE: f"no PDF is on record as {result.serial:06d}",
    }.get(result.issued_file, "not compared with the issued PDF (no issuance records: --public-key)")
    return f"{why}, and a matching text layer does not prove what the page shows — compare it by eye"


def _echo_signed(result: Verification, eras) -> None:
    for label, value in statements(result.pages[0], eras).items():
        click.echo(f"  {label}: {value}")
    for page in result.pages:
        click.echo(f"  --- {page.page}/{page.pages} {page.title} ---")
        for field in page.header:
            click.echo(f"  {field.label}: {_one_line(field.value)}")
        for number, person in enumerate(page.people, start=1):
            click.echo(f"  {number}人目")
            for field in person:
                annotation = f"（{field.annotation}）" if field.annotation else ""
                click.echo(f"    {field.label}: {_one_line(field.value)}{annotation}")
        if page.kind == "inkan":
            click.echo(f"  印影: {('SHA-256 ' + page.seal_digest) if page.seal_digest else 'not signed (a code from before format 3)'}")
        for line in (*page.closing, page.notice, page.serial_line):
            click.echo(f"  {line}")


def _one_line(value: str) -> str:
    return " / ".join(value.split("\n"))


def _issuance_lines(config, records, result: Verification) -> list[str]:
    """On the issuing appliance, also say what its records hold; return the problems."""
    scope = "drill" if result.drill else "real"
    row = records.execute(
        "SELECT status, issued_at, pdf FROM certificates WHERE scope = ? AND serial = ?", (scope, result.serial)
    ).fetchone()
    if row is None:
        return _not_valid(f"serial {result.serial:06d} is not in this appliance's issuance records")
    click.echo(f"  記録: {row[0]} ({row[1]})")
    if row[2] is None:
        return _not_valid(f"serial {result.serial:06d} was never rendered by this appliance (status {row[0]})")
    issued: tuple[SignedPage, ...] = verify_document(row[2], signing_key(config).public_key(), accept_drill=True).pages
    if any(page not in issued for page in result.pages):
        return _not_valid(f"the pages differ from the certificate this appliance issued as {result.serial:06d}")
    return []


def _not_valid(reason: str) -> list[str]:
    click.echo(f"NOT VALID: {reason}")
    return [reason]
