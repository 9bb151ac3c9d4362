"""`sonae user`: local staff accounts."""

from __future__ import annotations

import click

from fallback.cli_support import config, operator
from fallback.ops import open_ops
from fallback.staff import terminals, users

# A script gives the password here rather than as --password, whose value
# every local user can read on its command line (ps).
PASSWORD_ENV = "SONAE_USER_PASSWORD"


def _password(value: str | None) -> str:
    return value or click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group("user")
def user_group():
    """Add, disable, re-enable and reset staff accounts."""


@user_group.command("add")
@click.argument("username")
@click.option("--name", "display_name", required=True, help="Display name, e.g. 窓口 一郎.")
@click.option("--role", type=click.Choice(sorted(users.ROLES)), required=True)
@click.option("--password", envvar=PASSWORD_ENV, help=f"Initial password (or ${PASSWORD_ENV}; prompted if neither; at least 10 characters).")
@click.option("--actor", help="Who is doing this (default: the OS user).")
def add(username, display_name, role, password, actor):
    """Create an account."""
    conn = open_ops(config())
    users.add_user(conn, username, display_name, role, _password(password), actor=operator(actor))
    click.echo(f"added {username} ({role})")


@user_group.command("disable")
@click.argument("username")
@click.option("--actor")
def disable(username, actor):
    """Disable an account; its open sessions end at their next request."""
    users.set_disabled(open_ops(config()), username, True, actor=operator(actor))
    click.echo(f"disabled {username}")


@user_group.command("enable")
@click.argument("username")
@click.option("--actor")
def enable(username, actor):
    """Re-enable a disabled account."""
    users.set_disabled(open_ops(config()), username, False, actor=operator(actor))
    click.echo(f"enabled {username}")


@user_group.command("reset")
@click.argument("username")
@click.option("--password", envvar=PASSWORD_ENV, help=f"New password (or ${PASSWORD_ENV}; prompted if neither).")
@click.option("--actor")
def reset(username, password, actor):
    """Set a new password and clear a login lockout."""
    users.reset_password(open_ops(config()), username, _password(password), actor=operator(actor))
    click.echo(f"password reset for {username}")


@user_group.command("list")
def list_users():
    """List accounts with role and state."""
    for user in users.list_users(open_ops(config())):
        click.echo(f"{user.username}\t{user.role}\t{'disabled' if user.disabled else 'active'}\t{user.display_name}")


@click.group("terminal")
def terminal_group():
    """The PCs registered as counter terminals (a supervisor registers a PC at /terminal)."""


@terminal_group.command("list")
def list_terminals():
    """Registrations in force: terminal, when, by whom."""
    registrations = terminals.registrations(open_ops(config()))
    if not registrations:  # said on stderr: a script reading stdout still gets no rows
        click.echo("no PC is registered as a counter terminal: a supervisor registers each counter PC at /terminal "
                   "(its counter stays closed until then)", err=True)
    for registration in registrations:
        click.echo(f"{registration['terminal']}\t{registration['registered_at']}\t{registration['registered_by']}")


@terminal_group.command("withdraw")
@click.argument("terminal")
@click.option("--reason", required=True, help="Why, for the audit (e.g. 端末PC交換, 端末PC紛失).")
@click.option("--actor", help="Who is doing this (default: the OS user).")
def withdraw_terminal(terminal, reason, actor):
    """Withdraw every PC's registration as TERMINAL: a PC lost or replaced,
    or its cookie copied. Its counter stays closed until a supervisor
    registers the PC again at /terminal."""
    count = terminals.withdraw(open_ops(config()), terminal, actor=operator(actor), reason=reason)
    click.echo(f"withdrew {count} registration(s) as {terminal}; register the PC again at /terminal to open its counter")
