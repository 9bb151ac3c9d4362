"""`sonae doctor`: each check says what is fine, or one line of what to
fix — a passing and a failing case for every check."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from PIL import Image, ImageDraw

from fallback.config import load_config, render_toml
from fallback.monitoring import doctor
from fallback.monitoring.doctor import OK, PROBLEM, UNKNOWN
from fallback.ops import Transaction, open_ops
from sync.contract import CONTRACT_VERSION, sign
from tests.deploy.conftest import APPLIANCE_UID, ROOT, as_uid
from tests.mounts import require_tmpfs
from tests.pair.boxes import free_port
from tests.printing.cups_server import cups_server  # noqa: F401  (fixture)
from tests.support import Staff, example_records, served, write_export
from tests.sync import upstream_server
from tests.sync.upstream_server import TOKEN

WARD = {"code": "132012", "prefecture": "東京都", "name": "八王子市", "mayor": "八王子市長　初沢　高尾"}


def statuses(findings) -> list[str]:
    return [f.status for f in findings]


def only(findings, status: str) -> str:
    assert statuses(findings) == [status], [f.line for f in findings]
    return findings[0].message


def write_config(sonae_env, **sections) -> object:
    path = sonae_env.source or (sonae_env.home.parent / "etc" / "sonae.toml")
    path.write_text(render_toml(sections), encoding="utf-8")
    return load_config()


# --- the user ----------------------------------------------------------------


def test_the_doctor_run_as_root_says_to_run_it_as_the_appliance(sonae_env):
    assert "run it as the appliance's user" in only(doctor.running_user(sonae_env), PROBLEM)


def test_the_doctor_run_as_the_appliance_is_content():
    said = subprocess.run([*as_uid(APPLIANCE_UID), sys.executable, "-c",
                           "from fallback.monitoring.doctor import running_user; [f] = running_user(None); print(f.status, f.message)"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert said.stdout.strip() == "ok checking as uid 65534 (nobody), the user the services run as"


# --- configuration ------------------------------------------------------------


def test_a_ward_configuration_passes(sonae_env):
    config = write_config(sonae_env, municipality=WARD, web={"public_base_url": "https://sonae.city.hachioji.lg.jp"})
    assert "八王子市" in only(doctor.configuration(config, env={}), OK)


def test_a_misspelt_key_is_the_doctors_one_line_with_the_nearest_key(sonae_env):
    sonae_env.home.parent.joinpath("etc", "sonae.toml").write_text("[sync]\nkeep_generation = 3\n")
    result = subprocess.run([sys.executable, "-m", "fallback.cli", "doctor"], cwd=ROOT, capture_output=True, text=True, env=os.environ)
    assert result.returncode == 1 and len(result.stdout.splitlines()) == 1
    assert result.stdout.startswith("PROBLEM  configuration  ")
    assert "[sync] has no key 'keep_generation'; did you mean keep_generations?" in result.stdout


def test_a_configuration_with_a_byte_order_mark_passes(sonae_env):
    write_config(sonae_env, municipality=WARD, web={"public_base_url": "https://sonae.city.hachioji.lg.jp"})
    path = sonae_env.home.parent / "etc" / "sonae.toml"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-8-sig"))
    assert "八王子市" in only(doctor.configuration(load_config(), env={}), OK)


def test_a_missing_municipality_is_named(sonae_env):
    config = write_config(sonae_env, municipality={"code": "132012"}, web={"public_base_url": "https://sonae.city.hachioji.lg.jp"})
    message = only(doctor.configuration(config, env={}), PROBLEM)
    assert message.startswith("municipality.name, municipality.prefecture, municipality.mayor not set")
    # an environment override counts as set
    assert statuses(doctor.configuration(config, env={f"SONAE_MUNICIPALITY_{k.upper()}": "x" for k in WARD})) == [OK]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080", "https://[::1]/"])
def test_a_loopback_public_base_url_is_refused(sonae_env, url):
    config = write_config(sonae_env, municipality=WARD, web={"public_base_url": url})
    assert f"web.public_base_url is {url}, which only this box can open" in only(doctor.configuration(config, env={}), PROBLEM)


def test_the_examples_placeholders_are_named_with_what_to_set(sonae_env):
    example = load_config(ROOT / "deploy" / "sonae.toml.example", env={"SONAE_HOME": str(sonae_env.home)})
    said = [f.message for f in doctor.configuration(example, env={})]
    assert said == ["municipality.mayor is the example's placeholder (大田区長　○○　○○): set the mayor's name as certificates print it "
                    "(e.g. 大田区長　鈴木　晶雅)",
                    "web.public_base_url is the example's placeholder https://sonae.city.example.lg.jp: set the ward's address residents "
                    "use to verify certificates (printed in every QR code)"]
    assert only(doctor.upstream(example), PROBLEM) == ("upstream.url is the example's placeholder https://register.example.lg.jp: "
                                                       "set the vendor's https:// address")


@pytest.mark.parametrize("url", ["https://sonae.example.com", "https://sonae.ward.example"])
def test_any_domain_reserved_for_examples_is_a_placeholder(sonae_env, url):
    config = write_config(sonae_env, municipality=WARD, web={"public_base_url": url})
    assert "is the example's placeholder" in only(doctor.configuration(config, env={}), PROBLEM)


def test_a_ward_domain_that_merely_contains_example_is_not_a_placeholder(sonae_env):
    config = write_config(sonae_env, municipality=WARD, web={"public_base_url": "https://examples.city.hachioji.lg.jp"})
    assert statuses(doctor.configuration(config, env={})) == [OK]


# --- keys and the state directory --------------------------------------------------


@pytest.fixture
def keyed(sonae_env, monkeypatch):
    token = sonae_env.home.parent / "etc" / "upstream.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN_FILE", str(token))
    return load_config()


def test_keys_of_the_appliance_pass(keyed):
    assert "present, mode 0600, owned by uid 0 (root)" in only(doctor.keys(keyed), OK)


def test_a_key_readable_by_others_is_named(keyed):
    path = keyed["security"]["signing_key_file"]
    os.chmod(path, 0o644)
    assert only(doctor.keys(keyed), PROBLEM) == f"signing key {path} has mode 0644: run `chmod 600 {path}`"


def test_a_key_owned_by_another_uid_is_named(keyed):
    path = keyed["upstream"]["token_file"]
    os.chown(path, APPLIANCE_UID, APPLIANCE_UID)
    assert only(doctor.keys(keyed), PROBLEM) == (f"upstream token {path}: owner uid 65534 (nobody), gid 65534 (nogroup), mode 0600, "
                                                 "and Sonae runs as uid 0 (root): chown it to that uid")


def test_a_missing_key_and_a_key_inside_the_state_directory_are_named(keyed, monkeypatch):
    inside = keyed.home / "master.key"
    shutil.copy2(keyed["security"]["key_file"], inside)
    monkeypatch.setenv("SONAE_SECURITY_KEY_FILE", str(inside))
    monkeypatch.setenv("SONAE_SECURITY_SIGNING_KEY_FILE", str(keyed.home.parent / "etc" / "nowhere.key"))
    messages = [f.message for f in doctor.keys(load_config())]
    assert messages[0].startswith(f"master key {inside} is inside the state directory")
    assert messages[1] == f"signing key {keyed.home.parent / 'etc' / 'nowhere.key'} does not exist: write it with `sonae key init " \
                          f"{keyed.home.parent / 'etc' / 'nowhere.key'}`"


def master_key_line(config) -> str:
    [message] = [f.message for f in doctor.keys(config) if f.message.startswith("master key")]
    return message


def test_a_missing_master_key_beside_its_encrypted_data_is_to_be_restored_not_made_anew(loaded_env):
    key = loaded_env.home.parent / "etc" / "master.key"
    key.unlink()
    restore = (f"master key {key} is missing, and {loaded_env.home} holds data encrypted with it (ops.db): restore the key from "
               "its offline copy (runbook 07-kagi-kanri); a new key from `sonae key init` cannot read that data")
    assert master_key_line(loaded_env) == restore
    (loaded_env.home / "ops.db").rename(loaded_env.home / "ops.db.elsewhere")
    assert "holds data encrypted with it (gen-" in master_key_line(loaded_env)  # a snapshot generation alone is data too


def test_a_master_key_symlinked_out_of_the_mount_is_named_as_such(loaded_env, tmp_path):
    key = loaded_env.home.parent / "etc" / "master.key"
    key.unlink()
    key.symlink_to(tmp_path / "keystore" / "master.key")
    assert master_key_line(loaded_env).startswith(
        f"master key {key} is missing (a symlink to {tmp_path / 'keystore' / 'master.key'}, not there: a container sees only the "
        f"folder mounted), and {loaded_env.home} holds data encrypted with it (ops.db): restore the key from its offline copy")


def test_a_missing_master_key_on_a_new_box_is_to_be_made(sonae_env):
    key = sonae_env.home.parent / "etc" / "master.key"
    key.unlink()
    assert master_key_line(sonae_env) == f"master key {key} does not exist: write it with `sonae key init {key}`"


def doctor_as_appliance(check: str, env: dict) -> list[list[str]]:
    code = (f"import json; from fallback.config import load_config; from fallback.monitoring import doctor; "
            f"print(json.dumps([[f.status, f.message] for f in doctor.{check}(load_config())]))")
    said = subprocess.run([*as_uid(APPLIANCE_UID), sys.executable, "-c", code],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(said.stdout)


def test_the_state_directory_owned_by_root_is_named_for_the_appliance(box):
    [(status, message)] = doctor_as_appliance("state_directory", box.env())
    assert status == PROBLEM
    assert message.startswith(f"permission denied: Sonae cannot write {box.home}, owner uid 0 (root), gid 0 (root), mode 0700")


def test_the_state_directory_of_the_appliance_passes(box):
    box.give(box.home)
    assert doctor_as_appliance("state_directory", box.env()) == [[OK, f"{box.home} can be written by uid 65534 (nobody)"]]


# --- the 電子公印 and the fonts -----------------------------------------------------------


def test_no_seal_image_is_a_problem_for_real_issuance(sonae_env, monkeypatch):
    monkeypatch.setenv("SONAE_PRINTING_OFFICIAL_SEAL_IMAGE", "")  # the tests' environment configures the 見本 seal
    assert "real issuance is refused without one" in only(doctor.seal_image(load_config()), PROBLEM)


def seal_on(background: tuple, size: tuple[int, int], path) -> str:
    """A red ring on `background` (RGBA; alpha 0: transparent)."""
    image = Image.new("RGBA", size, background)
    if min(size) > 8:  # a ring needs room; a dot-sized image is judged by its size alone
        ImageDraw.Draw(image).ellipse((2, 2, size[0] - 3, size[1] - 3), outline=(200, 0, 0, 255),
                                      width=max(1, min(size) // 20))
    image.save(path)
    return str(path)


def seal_finding(monkeypatch, path) -> list:
    monkeypatch.setenv("SONAE_PRINTING_OFFICIAL_SEAL_IMAGE", str(path))
    return doctor.seal_image(load_config())


def test_a_seal_image_passes_and_a_file_that_is_no_image_is_named(sonae_env, monkeypatch, tmp_path):
    seal = tmp_path / "seal.png"
    seal_on((255, 255, 255, 0), (300, 300), seal)
    assert only(seal_finding(monkeypatch, seal), OK) == f"電子公印 {seal} (300×300 px, transparent background)"
    seal.write_text("not a picture")
    assert "is not an image" in only(seal_finding(monkeypatch, seal), PROBLEM)


@pytest.mark.parametrize("mode, suffix", [("RGB", "jpg"), ("RGB", "png"), ("RGBA", "png")])
def test_a_seal_on_an_opaque_background_is_named(sonae_env, monkeypatch, tmp_path, mode, suffix):
    seal = tmp_path / f"seal.{suffix}"
    Image.open(seal_on((255, 255, 255, 255), (400, 400), tmp_path / "scan.png")).convert(mode).save(seal)  # a scan on white paper
    assert only(seal_finding(monkeypatch, seal), PROBLEM) == (
        f"printing.official_seal_image {seal} has no transparent background: its background would cover the mayor's name "
        "printed under it; export the seal as PNG with a transparent background")


def test_a_seal_with_a_transparent_palette_colour_passes(sonae_env, monkeypatch, tmp_path):
    seal = tmp_path / "seal.png"
    Image.open(seal_on((255, 255, 255, 0), (300, 300), seal)).convert("P").save(seal, transparency=0)
    assert "transparent background" in only(seal_finding(monkeypatch, seal), OK)


@pytest.mark.parametrize("size, fine", [((150, 150), True), ((149, 300), False), ((1, 1), False),
                                        ((4000, 150), True), ((4001, 150), False)])
def test_a_seal_size_outside_150_to_4000_px_a_side_is_named(sonae_env, monkeypatch, tmp_path, size, fine):
    seal = seal_on((255, 255, 255, 0), size, tmp_path / "seal.png")
    [finding] = seal_finding(monkeypatch, seal)
    if fine:
        assert finding.status == OK, finding.line
    else:
        assert finding.status == PROBLEM and f"is {size[0]}×{size[1]} px" in finding.message, finding.line
        assert ("at least 150 px a side" if min(size) < 150 else "at most 4000 px a side") in finding.message


def test_a_seal_too_large_for_the_image_library_to_open_is_named(sonae_env, monkeypatch, tmp_path):
    seal = tmp_path / "seal.png"
    Image.new("1", (14000, 14000), 1).save(seal)  # 196 million pixels: PIL refuses to open it
    message = only(seal_finding(monkeypatch, seal), PROBLEM)
    assert message.startswith(f"printing.official_seal_image {seal} is far larger than any seal") and "at most 4000 px" in message


def test_a_seal_path_that_is_a_folder_is_named_as_one(sonae_env, monkeypatch, tmp_path):
    folder = tmp_path / "seal.png"
    folder.mkdir()
    assert only(seal_finding(monkeypatch, folder), PROBLEM) == (
        f"printing.official_seal_image {folder} is a folder, not a seal image (Docker makes a folder when the file to mount "
        "is missing): remove it and put the seal image there")


def test_the_certificate_fonts_are_installed(sonae_env):
    assert only(doctor.fonts(sonae_env), OK) == "IPAex明朝 and IPAmj明朝 installed"


def test_a_missing_font_is_named_with_its_package(sonae_env, tmp_path):
    message = only(doctor.fonts(sonae_env, required=(tmp_path / "ipamjm.ttf",)), PROBLEM)
    assert message == f"{tmp_path / 'ipamjm.ttf'} missing: certificates need them; apt-get install fonts-ipaexfont fonts-ipamj-mincho"


# --- printers ------------------------------------------------------------------------------


def terminals(queue: str) -> str:
    return json.dumps([{"id": "本庁1", "office": "本庁", "printer": "プリンタ001", "queue": queue}], ensure_ascii=False)


def test_no_queue_named_means_browser_printing(sonae_env):
    assert only(doctor.cups_queues(sonae_env), OK) == "no CUPS queue named: the counters print from the browser"


def test_queues_of_the_terminals_are_asked_of_the_print_server(sonae_env, cups_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CUPS_SERVER", cups_server.socket)
    monkeypatch.setenv("SONAE_COUNTER_TERMINALS", terminals("SONAE_PDF"))
    assert only(doctor.cups_queues(load_config()), OK) == "queues SONAE_PDF accept jobs"
    monkeypatch.setenv("SONAE_COUNTER_TERMINALS", terminals("COUNTER9"))
    message = only(doctor.cups_queues(load_config()), PROBLEM)
    assert message.startswith("queue COUNTER9 (本庁1) is not known to the print server (") and "lpadmin" in message
    subprocess.run(["cupsdisable", "-h", cups_server.socket, "SONAE_PDF"], check=True)
    monkeypatch.setenv("SONAE_COUNTER_TERMINALS", terminals("SONAE_PDF"))
    assert "is stopped" in only(doctor.cups_queues(load_config()), PROBLEM)


# --- the upstream -----------------------------------------------------------------------------


def self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "upstream.pem", tmp_path / "upstream.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def export_of_contract(tmp_path, version: int, signer=None):
    directory = write_export(tmp_path / f"export-{version}", example_records("residents"), example_records("seals"))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["contract"] = version
    signed = sign(manifest, signer or Ed25519PrivateKey.from_private_bytes(bytes(32)))
    (directory / "manifest.json").write_text(json.dumps(signed, ensure_ascii=False))
    return directory


@pytest.fixture
def tls_upstream(tmp_path, monkeypatch):
    """A real upstream over TLS with a certificate of its own, trusted
    through REQUESTS_CA_BUNDLE as a ward's CA would be."""
    cert, key = self_signed(tmp_path)
    servers = []

    def start(export_dir, *, trusted: bool = True):
        server = upstream_server.TestUpstream(export_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server._server.socket = context.wrap_socket(server._server.socket, server_side=True)
        server.start()
        servers.append(server)
        monkeypatch.setenv("SONAE_UPSTREAM_URL", server.url.replace("http://", "https://"))
        monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
        if trusted:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
        return load_config()

    yield start
    for server in servers:
        server.stop()


def test_an_upstream_over_tls_with_a_signed_manifest_passes(sonae_env, tls_upstream, tmp_path):
    config = tls_upstream(export_of_contract(tmp_path, CONTRACT_VERSION))
    assert only(doctor.upstream(config), OK).endswith(f"answers over TLS; its newest export is contract {CONTRACT_VERSION}, "
                                                      "signed by the configured key")


def test_an_upstream_whose_certificate_is_not_trusted_is_unreachable(sonae_env, tls_upstream, tmp_path):
    config = tls_upstream(export_of_contract(tmp_path, CONTRACT_VERSION), trusted=False)
    message = only(doctor.upstream(config), PROBLEM)
    assert message.startswith("not reachable: GET https://127.0.0.1:") and "CERTIFICATE_VERIFY_FAILED" in message


def test_another_contract_version_is_named(sonae_env, tls_upstream, tmp_path):
    config = tls_upstream(export_of_contract(tmp_path, CONTRACT_VERSION + 1))
    assert only(doctor.upstream(config), PROBLEM).startswith(f"the upstream serves contract {CONTRACT_VERSION + 1}, "
                                                             f"this Sonae reads contract {CONTRACT_VERSION}")


def test_a_manifest_signed_by_another_key_is_named(sonae_env, tls_upstream, tmp_path):
    config = tls_upstream(export_of_contract(tmp_path, CONTRACT_VERSION, Ed25519PrivateKey.generate()))
    assert "signature does not verify against the configured upstream public key" in only(doctor.upstream(config), PROBLEM)


def test_plain_http_and_a_missing_public_key_are_named(sonae_env, monkeypatch):
    monkeypatch.setenv("SONAE_UPSTREAM_URL", "http://127.0.0.1:9")  # discard: nothing answers
    monkeypatch.setenv("SONAE_UPSTREAM_PUBLIC_KEY", "")
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN", TOKEN)
    messages = [f.message for f in doctor.upstream(load_config())]
    assert messages[0] == ("upstream.url http://127.0.0.1:9 is not TLS (upstream.allow_insecure_http lets it through: "
                           "for the demo and tests only): use the vendor's https:// address")
    assert messages[1].startswith("upstream.public_key is not set") and len(messages) == 2


# --- the clock ----------------------------------------------------------------------------------


def timedatectl_saying(tmp_path, answer: str) -> str:
    """A stand-in for systemd's timedatectl, which needs a running systemd
    (a container has none): it answers the one question the doctor asks."""
    program = tmp_path / "timedatectl"
    program.write_text(f'#!/bin/sh\n[ "$*" = "show -p NTPSynchronized --value" ] && echo {answer}\n')
    program.chmod(0o755)
    return str(program)


def test_a_clock_synchronised_by_ntp_passes(sonae_env, tmp_path):
    assert only(doctor.clock(sonae_env, timedatectl_saying(tmp_path, "yes")), OK) == "synchronised by NTP"


def test_a_clock_not_synchronised_is_a_problem(sonae_env, tmp_path):
    assert only(doctor.clock(sonae_env, timedatectl_saying(tmp_path, "no")), PROBLEM).startswith("not synchronised by NTP")


def test_a_clock_that_cannot_be_asked_is_unknown(sonae_env, tmp_path):
    message = only(doctor.clock(sonae_env, str(tmp_path / "absent")), UNKNOWN)
    assert message == "cannot tell whether NTP keeps the clock (timedatectl is not installed): check on the host"


# --- the disk ----------------------------------------------------------------------------------


def test_room_for_two_generations_at_the_boundary():
    assert doctor.generation_room(1000, 2000) and not doctor.generation_room(1000, 1999)


def test_a_disk_with_room_for_two_generations_passes(loaded_env):
    assert "room for two generations of" in only(doctor.disk_space(loaded_env), OK)


def test_a_disk_without_room_for_two_generations_is_a_problem(loaded_env, tmp_path, monkeypatch):
    require_tmpfs()
    generation = sum(p.stat().st_size for p in loaded_env.snapshot_dir.rglob("*") if p.is_file())
    small = tmp_path / "small-home"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={generation * 5 // 2}", "tmpfs", str(small)], check=True)
    try:
        shutil.copytree(loaded_env.snapshot_dir, small / "snapshots")
        monkeypatch.setenv("SONAE_HOME", str(small))
        message = only(doctor.disk_space(load_config()), PROBLEM)
        assert "a full load needs room for two generations of" in message and "keep_generations" in message
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_the_disk_reserve_is_reported_made_released_or_not_made(loaded_env):
    from fallback import disk

    assert "not made yet: `sonae worker` makes it" in only(doctor.disk_reserve(loaded_env), UNKNOWN)
    disk.keep_reserve(loaded_env)  # the worker's turn
    assert "kept in" in only(doctor.disk_reserve(loaded_env), OK)
    disk.release_reserve(loaded_env, "only 3.0 MB free")
    message = only(doctor.disk_reserve(loaded_env), PROBLEM)
    assert message.startswith("released at ") and "(only 3.0 MB free)" in message and "runbook 09" in message


def test_a_disk_too_small_for_the_reserve_is_a_problem(sonae_env, tmp_path, monkeypatch):
    """An outside tester's box of 300 MB made no reserve, and nothing said so:
    the full disk then stopped IT's own login."""
    require_tmpfs()
    small = tmp_path / "small-home"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(small)], check=True)
    try:
        monkeypatch.setenv("SONAE_HOME", str(small))
        monkeypatch.setenv("SONAE_DISK_RESERVE_MB", "256")  # the default (the tests' is 1 MB)
        message = only(doctor.disk_reserve(load_config()), PROBLEM)
        assert message.startswith("the 256 MB reserve cannot be made: ") and "lower disk.reserve_mb" in message, message
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_no_generation_yet_cannot_be_sized(sonae_env):
    assert "no generation yet to size one by" in only(doctor.disk_space(sonae_env), UNKNOWN)


def _make_older_layout(config) -> None:
    from fallback.mirror.registry import snapshot_store
    from sync.register import connect_snapshot

    store = snapshot_store(config)
    conn = connect_snapshot(store.path_of(store.current()), store.key)
    conn.execute("UPDATE meta SET value = 4 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_current_generation_passes(loaded_env):
    assert "generation 1 opens (snapshot layout" in only(doctor.snapshot_layout(loaded_env), OK)


def test_a_generation_built_before_an_upgrade_is_a_problem_named_with_the_full_load(loaded_env):
    _make_older_layout(loaded_env)
    message = only(doctor.snapshot_layout(loaded_env), PROBLEM)
    assert "generation 1 has snapshot layout 4" in message and "run `sonae sync full`" in message


def test_a_generation_that_does_not_open_is_a_problem(loaded_env):
    from fallback.mirror.registry import snapshot_store
    from sync.register import connect_snapshot

    store = snapshot_store(loaded_env)
    path = store.path_of(1)
    conn = connect_snapshot(path, store.key, readonly=True)
    (meta_root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    data[(meta_root - 1) * 4096 + 200] ^= 0xFF  # the file opens; reading its layout fails
    path.write_bytes(bytes(data))
    assert "the current generation does not open" in only(doctor.snapshot_layout(loaded_env), PROBLEM)


def test_no_generation_yet_is_said(sonae_env):
    assert "`sonae sync full` loads the first" in only(doctor.snapshot_layout(sonae_env), UNKNOWN)


def test_a_clerk_meets_a_generation_built_before_an_upgrade_as_such_not_as_damage(loaded_env, configure_app):
    _make_older_layout(loaded_env)
    app = configure_app()
    with app.test_request_context():
        from fallback.mirror.availability import unavailable_message
        from fallback.mirror.registry import register_problem, snapshot_store

        message = unavailable_message(register_problem(), snapshot_store(loaded_env))
    assert "古い形式" in message and "sonae sync full" in message and "壊れているか" not in message


# --- accounts --------------------------------------------------------------------------------------


def test_a_supervisor_account_passes(loaded_env):
    assert only(doctor.first_supervisor(loaded_env), OK) == "supervisor account(s): boss, boss2"


def test_no_supervisor_is_a_problem_and_nothing_is_created(sonae_env):
    message = only(doctor.first_supervisor(sonae_env), PROBLEM)
    assert message == "no supervisor account yet (no operational database): create one: sonae user add USERNAME --name NAME --role supervisor"
    assert not sonae_env.ops_db_path.exists()


def test_only_other_roles_is_a_problem(loaded_env):
    from fallback.ops import open_ops
    from fallback.staff.users import set_disabled

    conn = open_ops(loaded_env)
    for name in ("boss", "boss2"):
        set_disabled(conn, name, True, actor="test")
    conn.close()
    assert only(doctor.first_supervisor(loaded_env), PROBLEM).startswith("no enabled supervisor account")


# --- the command --------------------------------------------------------------------------------------


def test_sonae_doctor_prints_one_line_per_finding_and_fails_on_a_problem(sonae_env):
    result = subprocess.run([sys.executable, "-m", "fallback.cli", "doctor"], cwd=ROOT, capture_output=True, text=True, env=os.environ)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert {line.split()[1] for line in lines} == {"user", "configuration", "web", "keys", "state", "seal", "fonts", "printers", "upstream",
                                                   "clock", "disk", "snapshot", "accounts"}
    assert all(line.split()[0] in ("OK", "PROBLEM", "UNKNOWN") for line in lines)
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ") and "to fix before the first start" in result.stderr


def test_sonae_doctor_on_a_configuration_that_does_not_load_says_so_in_one_line(sonae_env):
    sonae_env.home.parent.joinpath("etc", "sonae.toml").write_text("[printer]\nqueue = 1\n")
    result = subprocess.run([sys.executable, "-m", "fallback.cli", "doctor"], cwd=ROOT, capture_output=True, text=True, env=os.environ)
    assert result.returncode == 1
    assert result.stdout.startswith("PROBLEM  configuration  ") and "unknown section [printer]" in result.stdout
    assert len(result.stdout.splitlines()) == 1


# --- the worker's run, shown on /readyz and the dashboard ----------------------------------------


def test_the_workers_checkup_is_shown_on_readyz_and_the_dashboard(loaded_env, configure_app, monkeypatch):
    monkeypatch.setenv("SONAE_UPSTREAM_URL", "https://127.0.0.1:9")  # nothing answers: one problem to show
    app = configure_app(alerts={"metrics_token": "metrics-secret"})
    token = {"Authorization": "Bearer metrics-secret"}
    assert "doctor" not in app.test_client().get("/readyz", headers=token).get_json()["checks"]  # before the worker's first run

    checkup = doctor.run_doctor_job(load_config())
    assert "user" not in {f.check for f in checkup.findings}  # who runs it is the console's question, not the service's
    upstream_problem = next(f for f in checkup.problems if f.check == "upstream")
    ready = app.test_client().get("/readyz", headers=token)
    check = ready.get_json()["checks"]["doctor"]
    assert check["ok"] is False and upstream_problem.line in check["problems"] and check["checked_at"] == checkup.at
    assert "sonae doctor" not in app.test_client().get("/readyz").get_data(as_text=True)  # figures need the token
    page = Staff(app, "it1").get("/monitor/").get_data(as_text=True)
    assert 'id="doctor-problems"' in page and upstream_problem.message in page


def test_a_clean_checkup_leaves_readyz_ok_and_the_dashboard_quiet(loaded_env, configure_app):
    app = configure_app(alerts={"metrics_token": "metrics-secret"})
    conn = open_ops(load_config())
    with Transaction(conn):
        conn.execute("INSERT OR REPLACE INTO monitor_state (key, value) VALUES (?, ?)",
                     (doctor.STATE_KEY, '{"at": "2026-12-05T09:00:00+09:00", "findings": [{"check": "fonts", "status": "ok", "message": "x"}]}'))
    check = app.test_client().get("/readyz", headers={"Authorization": "Bearer metrics-secret"}).get_json()["checks"]["doctor"]
    assert check["ok"] is True and check["problems"] == []
    assert 'id="doctor-problems"' not in Staff(app, "it1").get("/monitor/").get_data(as_text=True)


def test_a_malformed_upstream_public_key_points_at_the_vendor_first(sonae_env, monkeypatch):
    monkeypatch.setenv("SONAE_UPSTREAM_PUBLIC_KEY", "not-a-key")
    config = write_config(sonae_env, upstream={"url": "https://register.vendor.lg.jp"})
    assert only(doctor.upstream(config), PROBLEM).endswith(
        "set upstream.public_key to the key the register vendor gives (for the demo's cloudsim: `sonae cloudsim public-key`)")


# --- the counter app's address ---------------------------------------------------------


def test_a_web_port_another_program_holds_is_named(sonae_env, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("SONAE_WEB_PORT", str(port))
        assert only(doctor.web_address(load_config()), PROBLEM) == (
            f"port {port} (web.port) on 127.0.0.1 is already in use by another program (another `sonae serve`?): "
            "stop that program, or set web.port to a free port")


def test_a_free_web_port_passes(sonae_env, monkeypatch):
    monkeypatch.setenv("SONAE_WEB_PORT", str(free_port()))
    assert only(doctor.web_address(load_config()), OK).startswith("the counter app can listen on 127.0.0.1:")


def test_a_web_port_sonae_already_serves_on_passes(appliance, monkeypatch):
    with served(appliance) as server:
        monkeypatch.setenv("SONAE_WEB_PORT", str(server.effective_port))
        assert only(doctor.web_address(load_config()), OK) == f"Sonae already serves on 127.0.0.1:{server.effective_port}"


def test_a_web_host_not_on_this_host_is_named(sonae_env, monkeypatch):
    monkeypatch.setenv("SONAE_WEB_HOST", "192.0.2.1")
    assert only(doctor.web_address(load_config()), PROBLEM).startswith("192.0.2.1 (web.host) is not an address of this host")
