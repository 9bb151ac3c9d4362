"""`sonae key init|rotate`: the at-rest master key."""

from __future__ import annotations

from pathlib import Path

import click

from fallback import audit
from fallback.anchor import rekey_anchor
from fallback.cli_support import config as load_config
from fallback.cli_support import operator, services_stopped
from fallback.keys import master_key
from fallback.mirror.registry import drill_snapshot_stores
from fallback.mirror.syncing import snapshot_store
from fallback.ops import connect_ops
from sync import crypto


@click.group("key")
def key_group():
    """Create and rotate the at-rest master key."""


@key_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False))
def init(path):
    """Write a new key (32 random bytes, base64, mode 0600) to PATH: the
    master key or the certificate signing key (the same format).

    Keep PATH outside SONAE_HOME and keep an offline copy: without the
    master key the snapshots and the operational database cannot be read;
    without the signing key certificates already issued cannot be checked.
    """
    written = crypto.write_key_file(path, forbidden_dir=load_config().home)
    click.echo(f"wrote a new 256-bit key to {written} (mode 0600); keep an offline copy — without the master key the data "
               "cannot be read, without the signing key certificates already issued cannot be checked here")


@key_group.command("rotate")
@click.option("--new-key-file", required=True, type=click.Path(exists=True, dir_okay=False), help="The new master key, written with `sonae key init PATH`.")
@click.option("--actor", help="Who rotates, for the audit log (default: the OS user).")
def rotate(new_key_file, actor):
    """Re-encrypt every snapshot generation (the drills' synthetic registers
    too) and the operational database under a new master key.

    \b
    1. sonae key init /etc/sonae/master-2027.key
    2. stop `sonae serve` and `sonae worker`
    3. sonae key rotate --new-key-file /etc/sonae/master-2027.key
    4. set security.key_file = "/etc/sonae/master-2027.key" in sonae.toml
       (or SONAE_SECURITY_KEY_FILE), start the services again
    5. once they run, destroy the old key and its copies

    It is refused while `sonae serve` or `sonae worker` runs, and they
    do not start while it runs. Each database is re-encrypted in one
    transaction, then the audit anchor is signed again under the new key.
    If the command is interrupted, run it again with the same file:
    databases already under the new key are skipped.
    """
    new_key_file = Path(new_key_file).resolve()
    config = load_config()
    old_master = master_key(config)
    new_master = crypto.read_key_file(new_key_file, forbidden_dir=config.home)
    if new_master == old_master:
        raise click.ClickException(f"{new_key_file} holds the key already in use; write a new one with `sonae key init PATH`")
    store = snapshot_store(config)
    with services_stopped(config), store.write_lock():  # no service holds a database, no sync writes
        generations = store.rekey(crypto.derive_key(new_master, "snapshot"))
        for drill_store in drill_snapshot_stores(config):
            drill_store.rekey(crypto.derive_key(new_master, "drill-snapshot"))
        ops_path = config.ops_db_path
        new_ops_key = crypto.derive_key(new_master, "ops")
        try:
            crypto.connect(ops_path, new_ops_key, readonly=True).close()
        except crypto.WrongKeyError:
            crypto.rekey(ops_path, crypto.derive_key(old_master, "ops"), new_ops_key)
        ops = connect_ops(ops_path, new_ops_key)
        try:
            audit.record(ops, operator(actor), "key.rotate", None, {"new_key_file": str(new_key_file), "generations": generations})
        finally:
            ops.close()
        rekey_anchor(config, new_master)
    click.echo(
        f"re-encrypted {len(generations)} snapshot generation(s) and the operational database under the key in {new_key_file}.\n"
        f"Now set security.key_file = \"{new_key_file}\" (or SONAE_SECURITY_KEY_FILE) and restart `sonae serve` and `sonae worker`."
    )
