"""`sonae snapshot list|verify|rollback`: inspect and choose snapshot generations."""

from __future__ import annotations

import datetime as dt
import json

import click

from fallback.cli_support import config as load_config
from fallback.cli_support import operator
from fallback.mirror import availability
from fallback.mirror.sync_commands import AHEAD_OF_THE_CLOCK, clock_behind, jst
from fallback.mirror.syncing import rollback_snapshot, snapshot_store
from fallback.ops import now, open_ops
from sync.store import OK, WRONG_KEY


@click.group("snapshot")
def snapshot_group():
    """Snapshot generations: list, verify, roll back."""


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_generations(as_json):
    """Every generation with its data-as-of time, age and counts, or what is
    wrong with it; the reads of it that failed at the counters lately (a
    generation can open and still be damaged inside); and what is wrong
    with the pointer to the current one."""
    config = load_config()
    store = snapshot_store(config)
    infos = store.generations()
    if infos and all(info.state == WRONG_KEY for info in infos):
        raise click.ClickException(f"the snapshot generations in {store.directory} {infos[0].problem}")
    pointer = store.pointer()
    moment = now()
    read_errors = _read_errors(config, moment)
    if pointer.damage:  # on stderr, so that --json stays a list of generations
        click.echo(f"damaged pointer: {store.undecided_message(pointer) if pointer.undecided else pointer.damage}", err=True)
    if as_json:
        click.echo(json.dumps([{**_as_json(info, moment), "read_errors": read_errors.get(info.number)} for info in infos],
                              ensure_ascii=False, indent=2))
        return
    if not infos:
        click.echo("no snapshot generations yet; load one with `sonae sync full`")
        return
    click.echo(f"{'gen':>5}  {'data as of':<20} {'age':>8} {'residents':>11} {'seals':>9} {'size':>9}  loaded at / source")
    for info in infos:
        meta = info.meta
        marker = "*" if info.current else " "
        if meta is None:
            click.echo(f"{marker}{info.number:>4}  {info.problem}")
            continue
        ahead = clock_behind(meta, moment)
        click.echo(
            f"{marker}{info.number:>4}  {jst(meta.as_of):<20} {'ahead!' if ahead else f'{meta.age(moment).total_seconds() / 3600:.1f}h':>8} "
            f"{meta.residents:>11,} {meta.seals:>9,} {info.size_bytes / 1e6:>7.1f}MB  {jst(meta.loaded_at)} / {meta.source}"
        )
        if errors := read_errors.get(info.number):
            click.echo(f"       reads failed at the counters: {errors['count']} since {jst(dt.datetime.fromisoformat(errors['first_at']))}, "
                       f"last {jst(dt.datetime.fromisoformat(errors['last_at']))} ({errors['error']}); "
                       f"run `sonae snapshot verify {info.number}`")
    click.echo("* = current")
    if any(info.meta is not None and clock_behind(info.meta, moment) for info in infos):
        click.echo(f"ahead! = {AHEAD_OF_THE_CLOCK}", err=True)


def _read_errors(config, moment: dt.datetime) -> dict[int, dict]:
    """The failed reads recorded for a generation within the last
    availability.WINDOW, by generation; {} when ops.db cannot say (the
    listing does not depend on it)."""
    try:
        conn = open_ops(config)
    except Exception as exc:  # a full or damaged disk: list what the snapshot directory holds
        click.echo(f"the counters' failed reads are not shown: the operational database cannot be opened ({exc})", err=True)
        return {}
    try:
        held = availability.latest(conn, moment)
        return {held["generation"]: held} if held else {}
    finally:
        conn.close()


def _as_json(info, moment) -> dict:
    base = {"generation": info.number, "current": info.current, "size_bytes": info.size_bytes, "state": info.state, "problem": info.problem}
    meta = info.meta
    if meta is None:
        return base
    return {
        **base,
        "as_of": meta.as_of.isoformat(),
        "age_hours": round(meta.age(moment).total_seconds() / 3600, 2),
        "last_seq": meta.last_seq,
        "export_id": meta.export_id,
        "export_seq": meta.export_seq,
        "contract": meta.contract,
        "residents": meta.residents,
        "seals": meta.seals,
        "loaded_at": meta.loaded_at.isoformat(),
        "source": meta.source,
    }


@snapshot_group.command("verify")
@click.argument("generation", type=int, required=False)
def verify(generation):
    """Check a generation (default: the current one): every encrypted page,
    SQLite's structure, row counts and record digests."""
    store = snapshot_store(load_config())
    report = store.verify(generation)
    if not report.ok:
        others = [info.number for info in store.generations() if info.number != report.generation and info.state == OK]
        then = (f"roll back to a good one ({', '.join(map(str, others))}: check it first with `sonae snapshot verify N`) with "
                "`sonae snapshot rollback N --reason ...`, and run `sonae sync full`" if others else
                "no other generation to roll back to: run `sonae sync full` to load a new one")
        raise click.ClickException(f"generation {report.generation} FAILED verification: {'; '.join(report.problems)} — {then}")
    click.echo(f"generation {report.generation}: ok — {report.residents:,} residents, {report.seals:,} seals; pages, structure and record digests check out ({report.seconds:.1f} s)")


@snapshot_group.command("rollback")
@click.argument("generation", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--actor", help="Who decides this, for the audit log (default: the OS user).")
def rollback(generation, reason, actor):
    """Make an older generation current again (after it passes verify).

    The change feed then continues from that generation's position. If the
    upstream data itself is wrong, stop `sonae worker` first, or the next
    scheduled full export will load it again.
    """
    if not reason.strip():
        raise click.ClickException("--reason is empty; say why you roll back (it goes into the audit log)")
    config = load_config()
    previous = rollback_snapshot(config, generation, reason, operator(actor))
    with snapshot_store(config).open_register(generation) as register:
        meta = register.meta
    was = f"was {previous}" if previous is not None else "no readable generation was current"
    click.echo(f"generation {generation} is current ({was}); data as of {jst(meta.as_of)}")
