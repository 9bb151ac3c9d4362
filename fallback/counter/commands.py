"""`sonae certificate specimen`, `public-key`, `cancel` and `cancellations`.

A specimen (見本) is rendered from the current snapshot so a ward can check
layouts and fonts before go-live: no serial is consumed and nothing is
recorded as issued (the look-up itself is audited, as every look-up is)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import click

from fallback import audit
from fallback.cli_support import config as load_config
from fallback.cli_support import operator
from fallback.counter import cancellations
from fallback.counter.rendering import municipality, print_settings
from fallback.keys import signing_key
from fallback.mirror.registry import snapshot_store
from fallback.ops import now, open_ops
from printing.model import KINDS, OPTIONAL_ITEMS, Certificate, CertificateError, IssueStamp
from printing.render import render_certificate
from sync.contract import public_key_to_b64


@click.group("certificate")
def certificate_group():
    """Certificate layouts, the public key, and cancelling a certificate issued."""



@certificate_group.command("public-key")
def public_key():
    """Print the public key that verifies this appliance's certificates (give
    it to whoever checks certificates offline)."""
    click.echo(public_key_to_b64(signing_key(load_config()).public_key()))


@certificate_group.command("specimen")
@click.option("--type", "kind", type=click.Choice(KINDS), required=True)
@click.option("--resident", "code", required=True, help="住民票コード of the subject.")
@click.option("--members", help="Comma-separated codes of household members to include (juminhyo/kisai), or 'all'.")
@click.option("--items", help=f"Comma-separated optional items: {', '.join(OPTIONAL_ITEMS)}.")
@click.option("--layout", type=click.Choice(["renketsu", "kojin"]), default="renketsu", show_default=True)
@click.option("--omit-katagaki", is_flag=True, help="Leave out 方書 (kisai only).")
@click.option("--drill", is_flag=True, help="Render as a drill certificate (訓練 watermark).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--actor")
def specimen(kind, code, members, items, layout, omit_katagaki, drill, out, actor):
    """Render a 見本 from the current snapshot; no serial is consumed."""
    config = load_config()
    store = snapshot_store(config)
    if store.current() is None:
        raise click.ClickException("no snapshot loaded yet; run `sonae sync full` first")
    with store.open_register() as register:
        subject = register.resident(code)
        if subject is None:
            raise click.ClickException(f"resident {code} is not in the current snapshot")
        residents = _residents(register, subject, kind, members)
        seal = None
        if kind == "inkan":
            seal = next((s for s in register.seals_of(code) if s["status"] == "active"), None)
        as_of = register.meta.as_of
    requested = frozenset(i for i in (items or "").split(",") if i)
    stamp = IssueStamp(serial=0, issued_at=now(), data_as_of=as_of, municipality=municipality(config),
                       terminal="見本", printer_id="見本", drill=drill, specimen=True)
    try:
        certificate = Certificate(kind=kind, residents=residents, stamp=stamp, settings=print_settings(config),
                                  layout="kojin" if kind in ("johyo", "inkan") else layout, seal=seal,
                                  requested=requested, omit_katagaki=omit_katagaki, whole_household=kind in ("juminhyo", "kisai") and members == "all")
    except (CertificateError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    rendered = render_certificate(certificate, signing_key(config))
    out.write_bytes(rendered.pdf)
    audit.record(open_ops(config), operator(actor), "certificate.specimen", code,
                 {"kind": kind, "residents": [r["resident_code"] for r in residents]}, drill=drill)
    click.echo(f"wrote {out} ({rendered.pages} page(s))")


def _residents(register, subject: dict, kind: str, members: str | None) -> list[dict]:
    if kind not in ("juminhyo", "kisai") or not members:
        return [subject]
    household = register.household(subject["household_id"]).active
    if members == "all":
        return household
    wanted = set(members.split(",")) | {subject["resident_code"]}
    chosen = [r for r in household if r["resident_code"] in wanted]
    unknown = wanted - {r["resident_code"] for r in chosen}
    if unknown:
        raise click.ClickException(f"not current members of household {subject['household_id']}: {', '.join(sorted(unknown))}")
    return chosen


@certificate_group.command("cancel")
@click.argument("serial", type=click.IntRange(min=0))
@click.option("--reason", type=click.Choice(list(cancellations.REASONS)), required=True,
              help="spoiled (書損), wrongly_issued (誤交付) or other.")
@click.option("--note", required=True, help="What happened (who, what, and the serial of any new certificate issued instead).")
@click.option("--actor", help="The 係長 who asked for it: recorded after the console's own name (cli:<OS user> for NAME).")
def cancel(serial, reason, note, actor):
    """Cancel a real certificate already issued: from now on the
    certificate check says it is NOT VALID, and the counter neither prints
    nor opens it. Final; the serial is never used again."""
    if actor is not None and (not actor.strip() or any(unicodedata.category(c) in ("Cc", "Cf") for c in actor)):
        raise click.BadParameter("a name, without tabs, line breaks or other control characters", param_hint="--actor")
    # The console is always named: a cancellation cannot pass for a 係長's own at the web page.
    who = operator(None) + (f" for {actor.strip()}" if actor else "")
    try:
        done = cancellations.cancel(open_ops(load_config()), serial, reason=reason, note=note, actor=who)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"cancelled {done.serial:06d} (request {done.request_id}, {done.reason}) at {done.cancelled_at}")


@certificate_group.command("cancellations")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
def cancellations_list(limit):
    """The certificates cancelled, newest first (tab-separated: serial,
    when, by whom, reason, request, note)."""
    found = cancellations.recent(open_ops(load_config()), limit)
    if not found:
        click.echo("no certificate has been cancelled", err=True)
    for c in found:
        click.echo(f"{c.serial:06d}\t{c.cancelled_at}\t{c.cancelled_by}\t{c.reason}\t{c.request_id}\t{c.note}")
