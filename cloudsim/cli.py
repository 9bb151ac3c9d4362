"""`sonae cloudsim …`: run the stand-in upstream and steer it.

serve, public-key and export work on a state directory; publish, changes,
status and fault talk to a running simulator's admin port.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click
import requests

from cloudsim.faults import FAULTS
from cloudsim.keys import KEY_FILE_NAME

DEFAULT_STATE_DIR = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "sonae-cloudsim"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8701"
ADMIN_TIMEOUT_S = 600  # publishing a million residents takes a while


@click.group("cloudsim")
def cloudsim_group():
    """The stand-in for the vendor's cloud register (tests, demo, drills)."""


def register_options(command):
    """Options that describe the synthetic register."""
    for option in reversed((
        click.option("--residents", type=click.IntRange(1), default=20_000, show_default=True, help="rows in the register (removed ones included)"),
        click.option("--seed", type=int, default=1, show_default=True, help="same seed, same register"),
        click.option("--as-of", "register_date", type=click.DateTime(["%Y-%m-%d"]), default=None,
                     help="register date (export as of 23:00 that day); default: yesterday, or the date of a reused state"),
        click.option("--municipality-code", default="131113", show_default=True),
        click.option("--prefecture", default="東京都", show_default=True),
        click.option("--city", default="大田区", show_default=True),
        click.option("--individual-numbers", is_flag=True, help="include 個人番号 (off: the ward does not send them)"),
        click.option("--workers", type=click.IntRange(1), default=None, help="processes for generating (default: all cores)"),
    )):
        command = option(command)
    return command


def state_dir_option(command):
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_STATE_DIR,
                        envvar="SONAE_CLOUDSIM_STATE_DIR", show_default=True)(command)


def key_file_option(command):
    return click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="Ed25519 signing key (base64 of 32 bytes, mode 0600); created if missing. Default: STATE_DIR/signing.key")(command)


@cloudsim_group.command()
@register_options
@state_dir_option
@key_file_option
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True, help="contract port on 127.0.0.1 (0: any free port)")
@click.option("--admin-port", type=click.IntRange(0, 65535), default=8701, show_default=True, help="admin port on 127.0.0.1 (0: any free port)")
@click.option("--token", envvar="SONAE_CLOUDSIM_TOKEN", default=None, help="bearer token for both ports (default: a random one)")
@click.option("--change-rate", type=click.FloatRange(0), default=30.0, show_default=True, help="changes per minute (0: none)")
@click.option("--export-every", type=click.FloatRange(1), default=None, help="publish a full export every SECONDS")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="written (JSON: url, admin_url, token, public_key, export_id) once the ports accept connections")
def serve(residents, seed, register_date, municipality_code, prefecture, city, individual_numbers, workers,
          state_dir, key_file, port, admin_port, token, change_rate, export_every, ready_file):
    """Serve the upstream contract with a synthetic register."""
    from cloudsim.keys import KeyFileError
    from cloudsim.sim import start_cloudsim

    _signing_key(key_file or state_dir / KEY_FILE_NAME)  # fails early, and says so when it creates one
    click.echo(f"cloudsim: preparing {residents:,} residents (seed {seed}) in {state_dir} …", err=True)
    started = time.monotonic()
    try:
        sim = start_cloudsim(
            state_dir, residents=residents, seed=seed, register_date=register_date.date() if register_date else None,
            municipality_code=municipality_code, prefecture=prefecture, city=city, individual_numbers=individual_numbers,
            token=token, key_file=key_file, port=port, admin_port=admin_port, change_rate=change_rate,
            export_every=export_every, workers=workers, ready_file=ready_file,
        )
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc.strerror or exc}") from exc
    how = "reused" if sim.register.reused else "generated"
    click.echo(f"cloudsim: register {how} in {time.monotonic() - started:.1f} s", err=True)
    # A token it was given stays out of the output, which often ends in a log.
    shown_token = "(as given)" if token else sim.token
    click.echo(f"cloudsim ready: url={sim.url} token={shown_token} public_key={sim.public_key} "
               f"admin_url={sim.admin_url} export_id={sim.export_id}", nl=True)
    sys.stdout.flush()
    _wait_for_signal()
    sim.stop()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


@cloudsim_group.command("public-key")
@state_dir_option
@key_file_option
def public_key(state_dir, key_file):
    """Print the public key that verifies the manifests (base64 of the raw
    32 bytes: the value of upstream.public_key). Creates the key file if missing."""
    from cloudsim.keys import public_key_b64

    click.echo(public_key_b64(_signing_key(key_file or state_dir / KEY_FILE_NAME)))


def _signing_key(path: Path):
    from cloudsim.keys import KeyFileError, load_or_create_key

    try:
        private_key, created = load_or_create_key(path)
    except (KeyFileError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if created:
        click.echo(f"cloudsim: wrote a new signing key to {path}", err=True)
    return private_key


@cloudsim_group.command("export")
@register_options
@state_dir_option
@key_file_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="directory to write (must not exist)")
def export(residents, seed, register_date, municipality_code, prefecture, city, individual_numbers, workers, state_dir,
           key_file, out):
    """Write a signed export directory (manifest.json beside its files), as
    dropped onto an appliance. Signed with the same key as `serve`."""
    import shutil
    import tempfile

    from cloudsim.parallel import default_workers
    from cloudsim.register import Register, now_jst
    from sync.synthetic.synth import RegisterSpec

    if out.exists():
        raise click.ClickException(f"{out} exists; give a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    private_key = _signing_key(key_file or state_dir / KEY_FILE_NAME)
    spec = RegisterSpec(residents=residents, seed=seed,
                        register_date=register_date.date() if register_date else now_jst().date() - dt.timedelta(days=1),
                        municipality_code=municipality_code, prefecture=prefecture, city=city, individual_numbers=individual_numbers)
    with tempfile.TemporaryDirectory(prefix="cloudsim-export-", dir=out.parent) as scratch:
        register = Register.open(Path(scratch), spec, private_key=private_key, workers=workers or default_workers())
        shutil.move(register.exports_dir / register.latest_manifest()["export_id"], out)
    click.echo(str(out))


# --- talking to a running simulator ---------------------------------------------


def admin_options(command):
    command = click.option("--token", envvar="SONAE_CLOUDSIM_TOKEN", required=True, help="the simulator's bearer token")(command)
    return click.option("--admin-url", envvar="SONAE_CLOUDSIM_ADMIN_URL", default=DEFAULT_ADMIN_URL, show_default=True)(command)


def admin_call(method: str, admin_url: str, token: str, path: str, body: dict | None = None) -> dict:
    url = admin_url.rstrip("/") + path
    try:
        response = requests.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=ADMIN_TIMEOUT_S)
    except requests.RequestException as exc:
        raise click.ClickException(f"{method} {url}: cloudsim admin port not reachable ({type(exc).__name__})") from None
    try:
        answer = response.json()
    except ValueError:
        raise click.ClickException(f"{method} {url}: HTTP {response.status_code}, not a JSON answer") from None
    if response.status_code >= 400:
        raise click.ClickException(f"{method} {url}: {answer.get('error')}: {answer.get('message')}")
    return answer


@cloudsim_group.command()
@admin_options
def publish(admin_url, token):
    """Publish a full export of the register as it is now."""
    manifest = admin_call("POST", admin_url, token, "/admin/exports")
    counts = ", ".join(f"{f['kind']} {f['records']:,}" for f in manifest["files"])
    click.echo(f"{manifest['export_id']} last_seq={manifest['last_seq']} ({counts})")


@cloudsim_group.command()
@admin_options
@click.option("--events", type=click.IntRange(1, 100_000), default=10, show_default=True)
def changes(admin_url, token, events):
    """Let EVENTS things happen in the ward now (moves, births, seals …)."""
    answer = admin_call("POST", admin_url, token, "/admin/changes", {"events": events})
    click.echo(f"{answer['changes']} changes, last_seq={answer['last_seq']}")


@cloudsim_group.command()
@admin_options
def status(admin_url, token):
    """Print the running simulator's status as JSON."""
    click.echo(json.dumps(admin_call("GET", admin_url, token, "/admin/status"), ensure_ascii=False, indent=2))


@cloudsim_group.group()
def fault():
    """Switch faults of the simulated upstream on and off."""


@fault.command("set")
@click.argument("name", type=click.Choice(sorted(FAULTS)))
@click.option("--seconds", type=click.FloatRange(0, min_open=True), default=None,
              help="slow: the delay per request (default 5); any other fault: switch off by itself after SECONDS")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, help="switch off by itself after SECONDS")
@admin_options
def fault_set(name, seconds, duration, admin_url, token):
    """Switch fault NAME on."""
    if name != "slow" and duration is None:
        seconds, duration = None, seconds
    _print_faults(admin_call("PUT", admin_url, token, f"/admin/faults/{name}", {"seconds": seconds, "duration": duration}), [name])


@fault.command("clear")
@click.argument("name", type=click.Choice(sorted(FAULTS)), required=False)
@admin_options
def fault_clear(name, admin_url, token):
    """Switch fault NAME off (all faults without NAME)."""
    answer = admin_call("DELETE", admin_url, token, f"/admin/faults/{name}" if name else "/admin/faults")
    _print_faults(answer, [name] if name else None)


@fault.command("list")
@admin_options
def fault_list(admin_url, token):
    """Show every fault and whether it is on."""
    _print_faults(admin_call("GET", admin_url, token, "/admin/faults"))


def _print_faults(answer: dict, names: list[str] | None = None) -> None:
    for name, description in answer["known"].items():
        if names is not None and name not in names:
            continue
        active = answer["active"].get(name)
        state = "ON " if active else "off"
        detail = ""
        if active and active["seconds"]:
            detail += f" seconds={active['seconds']:g}"
        if active and active["until"]:
            detail += f" for {max(0.0, active['until'] - time.time()):.0f} s more"
        click.echo(f"{state} {name:<15}{detail}  {description}")
