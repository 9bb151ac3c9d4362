"""The files a ward's IT deploys with — compose.yaml, the systemd units,
the image and the locks — checked for what the README promises of them
(no Docker engine runs in CI: the files are read, the units verified)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fallback import clock
from fallback.config import load_config

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SERVICES = {"serve": "sonae-serve.service", "worker": "sonae-worker.service"}


# --- compose.yaml --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_serve_and_worker_run_from_one_image(compose):
    services = compose["services"]
    assert set(services) == {"serve", "worker"}
    assert {s["image"] for s in services.values()} == {"sonae:latest"}
    assert services["serve"]["command"] == ["sonae", "serve"] and services["worker"]["command"] == ["sonae", "worker"]
    assert all(s["build"] == "." for s in services.values())
    assert all(s["restart"] in ("unless-stopped", "always", "on-failure") for s in services.values())


def test_state_is_a_volume_and_configuration_and_keys_are_read_only(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    config_dir = re.search(r"SONAE_CONFIG=(\S+)/sonae\.toml", dockerfile).group(1)
    assert "state" in compose["volumes"]
    for service in compose["services"].values():
        mounts = {(m.rsplit(":", 2)[1] if m.endswith(":ro") else m.split(":")[1]): m for m in service["volumes"]}
        assert mounts["/var/lib/sonae"] == "state:/var/lib/sonae"  # the image's VOLUME, named
        assert mounts[config_dir].endswith(":ro"), "sonae.toml and the keys must be read-only"
        assert service["environment"]["SONAE_CONFIG"] == f"{config_dir}/sonae.toml"
        assert service["read_only"] is True and "no-new-privileges:true" in service["security_opt"]


def test_the_port_comes_from_the_configuration_alone(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    for service in compose["services"].values():
        assert service["network_mode"] == "host" and "ports" not in service
        assert "--port" not in service["command"] and not any("PORT" in k for k in service["environment"])
    assert "--port" not in re.search(r"^CMD (.*)$", dockerfile, re.M).group(1)


def test_the_counter_app_has_a_health_check_the_image_can_run(compose):
    check = compose["services"]["serve"]["healthcheck"]
    assert check["test"] == ["CMD", "sonae", "health"]
    from fallback.cli import COMMANDS

    assert COMMANDS["health"] == "fallback.monitoring.commands:health"
    assert "healthcheck" not in compose["services"]["worker"]  # the worker serves no HTTP


def test_sonae_health_asks_the_configured_port(tmp_path, monkeypatch):
    from tests.support import EXAMPLE_EXPORT
    from tests.sync.upstream_server import TestUpstream  # any loopback server: /healthz is answered 401 there

    server = TestUpstream(EXAMPLE_EXPORT).start()
    try:
        port = server.url.rsplit(":", 1)[1]
        env = {"SONAE_WEB_PORT": port, "SONAE_CONFIG": str(tmp_path / "none.toml")}
        result = subprocess.run([sys.executable, "-m", "fallback.cli", "health"], cwd=ROOT, capture_output=True, text=True,
                                env={**__import__("os").environ, **env})
        assert result.returncode == 1 and result.stderr.strip() == f"Error: http://127.0.0.1:{port}/healthz: HTTP 401"
    finally:
        server.stop()


def test_the_documented_configuration_example_exists_and_is_all_known_keys(compose):
    example = ROOT / "deploy" / "sonae.toml.example"
    assert "deploy/sonae.toml.example" in (ROOT / "compose.yaml").read_text()
    config = load_config(example, env={})  # refuses any key Sonae does not read
    assert config["web"]["host"] == "0.0.0.0" and not config["web"]["public_base_url"].startswith("http://127.")
    readme = (ROOT / "README.md").read_text()
    for path in ("compose.yaml", "deploy/sonae.toml.example", "deploy/systemd/sonae-serve.service", "deploy/systemd/sonae-worker.service"):
        assert path in readme and (ROOT / path).exists(), path


# --- systemd units ------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("command", SERVICES)
def test_each_unit_runs_its_command_as_a_dedicated_user_with_hardening(command):
    settings = unit(SERVICES[command])
    assert settings["ExecStart"] == [f"/opt/sonae/venv/bin/sonae {command}"]
    assert settings["User"] == ["sonae"] and settings["StateDirectory"] == ["sonae"] and settings["UMask"] == ["0077"]
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes"}.items():
        assert settings[key] == [value], key
    assert settings["CapabilityBoundingSet"] == [""]
    # ProcSubset=pid would hide the boot id by which fallback.clock tells
    # readings of this boot from the last one's.
    assert "ProcSubset" not in settings and str(clock.BOOT_ID).startswith("/proc/sys/")


def test_the_units_verify_and_are_well_hardened(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test-system-packages` installs Debian's systemd package"
    # verify checks that ExecStart's program exists: point the copies at
    # this checkout's `sonae`, which is what /opt/sonae/venv/bin/sonae is on a box.
    sonae = Path(sys.executable).with_name("sonae")
    assert sonae.exists()
    copies = []
    for name in SERVICES.values():
        copy = tmp_path / name
        copy.write_text((UNITS / name).read_text().replace("/opt/sonae/venv/bin/sonae", str(sonae)))
        copies.append(str(copy))
    verified = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True)
    # verify warns about unknown keys and bad values on stderr and still exits 0
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    for copy in copies:
        scored = subprocess.run([analyze, "security", "--offline=true", copy], capture_output=True, text=True)
        level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", scored.stdout).group(1))
        assert level <= 2.0, scored.stdout[-2000:]


def test_verify_notices_a_bad_directive(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze
    broken = tmp_path / "broken.service"
    broken.write_text((UNITS / SERVICES["serve"]).read_text().replace("/opt/sonae/venv/bin/sonae", str(Path(sys.executable).with_name("sonae")))
                      .replace("ProtectSystem=strict", "ProtectSystem=strickt"))
    verified = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "Failed to parse protect system value" in verified.stderr


# --- the image and the locks ----------------------------------------------------------------


def test_the_image_installs_from_the_lock_with_hashes_and_ships_no_cloudsim():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile and "--no-deps --no-build-isolation ." in dockerfile
    copied = " ".join(re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", dockerfile, re.M))
    for left_out in ("cloudsim", "tests", "bench", "requirements-dev.lock"):
        assert left_out not in copied
    assert '! /opt/sonae/venv/bin/python3 -c "import cloudsim"' in dockerfile  # the build fails if cloudsim got in
    assert "--mount=type=secret,id=ward_ca" in dockerfile and "PIP_CERT=/run/secrets/ward_ca" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in makefile and "--require-hashes -r requirements-dev.lock" in makefile


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_is_pinned_with_a_hash(lock):
    text = (ROOT / lock).read_text()
    entries = re.split(r"\n(?=[a-z0-9])", text)
    pins = [e for e in entries if re.match(r"^[a-z0-9][a-z0-9._-]*(\[[a-z0-9,_-]+\])?==", e)]
    assert len(pins) > 20
    assert all("--hash=sha256:" in pin for pin in pins)
    assert "file://" not in text and "/work/" not in text  # nothing of a build machine
    production = (ROOT / "requirements.lock").read_text()
    for demo_or_test in ("selenium==", "pytest==", "aiosmtpd==", "schemathesis=="):
        assert demo_or_test not in production


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_extra_a_locked_package_asks_for_is_locked_with_it(lock):
    """pip before 23.3 (what `python3 -m venv` brings, and Debian's) refuses
    a hash-checked install where a package asks for another's extra — weasyprint
    needs fonttools[woff] — unless the lock pins it as `fonttools[woff]==`:
    it took the newest fonttools from the index instead, unpinned."""
    pinned = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)(?:\[([a-z0-9,_-]+)\])?==", (ROOT / lock).read_text(), re.M))
    wanted: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in pinned:
            continue
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.extras and (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
                wanted.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    assert "fonttools" in wanted  # the case that broke CI: weasyprint's fonttools[woff]
    for name, extras in wanted.items():
        assert name in pinned, f"{name} is asked for but not locked"
        assert extras <= set(filter(None, pinned[name].split(","))), f"{lock} pins {name} without its extras {sorted(extras)}"


def test_the_sonae_wheel_has_no_cloudsim_and_says_where_the_demo_is(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("sonae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("cloudsim/")] and any(n.startswith("fallback/") for n in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "cloudsim" not in entry_points
    # Sonae from that wheel alone, as in the image: no .pth of this checkout, cwd elsewhere
    installed = tmp_path / "prod"
    zipfile.ZipFile(wheel).extractall(installed)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    for command in ("cloudsim", "demo"):
        result = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(installed)!r}, {site!r}]; "
                                 "from fallback.cli import main; main()", command, "run"],
                                cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == (f"Error: `sonae {command}` needs cloudsim, which a production install leaves out: it comes with "
                                         "the `demo` extra of a source checkout (`make demo`, or pip install -e ./cloudsim -e '.[demo]')")


def test_a_demo_install_has_cloudsim():
    result = subprocess.run([sys.executable, "-m", "fallback.cli", "cloudsim", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "stand-in for the vendor's cloud register" in result.stdout
