"""`sonae verify FILE`: the certificate check from the console, for a
certificate received by post or a scan handed in at another office."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fallback.cli_support import config as load_config
from fallback.counter.rendering import print_settings
from fallback.keys import signing_key
from fallback.ops import open_ops
from printing.signing import CertificateVerificationError
from printing.verify import verify_file
from sync.contract import public_key_from_b64


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", help="The issuing appliance's public key (base64); default: this appliance's own.")
@click.option("--accept-drill", is_flag=True, help="Show a drill certificate's contents instead of refusing it.")
def verify(file, public_key, accept_drill):
    """Check a certificate PDF or a scanned page: QR signature, and for a PDF
    that the printed text matches what was signed."""
    config = load_config()
    key: Ed25519PublicKey = public_key_from_b64(public_key) if public_key else signing_key(config).public_key()
    try:
        result = verify_file(file, key, accept_drill=accept_drill, eras=print_settings(config).eras)
    except CertificateVerificationError as exc:
        raise click.ClickException(f"NOT VALID: {exc}") from exc
    click.echo("VALID" + (" (drill — not a real certificate)" if result.certificate.drill else ""))
    for label, value in result.statements.items():
        click.echo(f"  {label}: {value}")
    if not public_key:
        _report_issuance(config, result.certificate)


def _report_issuance(config, certificate) -> None:
    """On the issuing appliance, also say what its records hold."""
    scope = "drill" if certificate.drill else "real"
    row = open_ops(config).execute(
        "SELECT status, issued_at, content_digest FROM certificates WHERE scope = ? AND serial = ?", (scope, certificate.serial)
    ).fetchone()
    if row is None:
        raise click.ClickException(f"NOT VALID: serial {certificate.serial:06d} is not in this appliance's issuance records")
    if row[2] != certificate.content_digest:
        raise click.ClickException("NOT VALID: the printed content differs from what this appliance recorded for the serial")
    click.echo(f"  記録: {row[0]} ({row[1]})")
