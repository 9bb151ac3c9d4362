"""`sonae ops verify`: check the operational database — its pages, its
structure, the audit chain, and the chain against the anchor kept outside
it. The command to run when `ops.db` is suspected, before any restore."""

from __future__ import annotations

import click

from fallback import anchor, audit, ops
from fallback.cli_support import config


@click.group("ops")
def ops_group():
    """The operational database (modes, issuance, serials, audit)."""


@ops_group.command("verify")
def verify():
    """Read every page of ops.db and check the audit chain and its anchor;
    exit 1 naming each problem."""
    loaded = config()
    conn = ops.open_ops(loaded)
    problems = ops.damage(conn)
    chain = audit.verify_chain(conn)
    if not chain.ok:
        problems.append(f"audit chain broken at entry {chain.first_break}: {chain.reason}")
    try:
        problems += anchor.problems(conn, anchor.read_anchor(loaded))
    except anchor.AnchorError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        raise click.ClickException(
            f"{loaded.ops_db_path}: {len(problems)} problem(s); keep the file as it is and follow runbooks/08-snapshot-restore.md")
    click.echo(f"{loaded.ops_db_path}: pages, structure, schema, audit chain ({chain.entries} entries) and anchor all check out")
