"""`sonae doctor` and `sonae health`: the first-run checks, and the
container's health check."""

from __future__ import annotations

import click
import requests

from fallback.cli_support import config as load_config
from fallback.config import ConfigError
from fallback.monitoring import doctor as checks


@click.command()
def doctor():
    """Check this box before its first start, one line each, with what to
    fix: configuration, keys, the state directory, the 電子公印, fonts,
    printers, the upstream, the clock, disk space, a supervisor account.

    Run it as the appliance's user (runuser -u sonae -- sonae doctor).
    Exits non-zero when anything needs fixing.
    """
    try:
        config = load_config()
    except ConfigError as exc:  # nothing else can be checked without it
        findings = [checks.Finding("configuration", checks.PROBLEM, str(exc))]
    else:
        findings = checks.run_checks(config)
    for finding in findings:
        click.echo(finding.line)
    problems = sum(1 for f in findings if f.status == checks.PROBLEM)
    if problems:
        raise click.ClickException(f"{problems} thing(s) to fix before the first start (lines marked PROBLEM)")


@click.command()
@click.option("--ready", is_flag=True, help="Ask /readyz (can the counters be served?) instead of /healthz (does the app answer?).")
def health(ready):
    """Ask this box's counter app, on web.port, whether it is alive (or
    ready); exit 0 if so. The image's health check. Not ready, it says
    which checks fail (and what they found, with alerts.metrics_token)."""
    config = load_config()
    web = config["web"]
    host = "127.0.0.1" if web["host"] in ("0.0.0.0", "::", "") else web["host"]
    url = f"http://{host}:{web['port']}/{'readyz' if ready else 'healthz'}"
    token = config["alerts"]["metrics_token"]
    try:
        response = requests.get(url, timeout=5, headers={"Authorization": f"Bearer {token}"} if ready and token else {})
    except requests.RequestException as exc:
        raise click.ClickException(f"{url}: no answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url}: HTTP {response.status_code}{_not_ready_because(response)}")
    click.echo(f"{url}: HTTP 200")


def _not_ready_because(response: requests.Response) -> str:
    """", not ready: disk_space (証明書1通分の空きもありません), …" from a
    /readyz answer (only the names without the token); "" from any other."""
    try:
        body = response.json()
        failing = list(body["failing"])
    except (ValueError, KeyError, TypeError):
        return ""
    checks = body.get("checks") or {}
    named = [f"{name} ({checks[name]['detail']})" if "detail" in checks.get(name, {}) else name for name in failing]
    return f", not ready: {', '.join(named)}" + ("" if checks else " (what each found: the IT dashboard /monitor/)")
