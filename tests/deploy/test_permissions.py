"""Permission and ownership problems, met as an appliance running under its
own uid meets them: one line naming the path, its owner and mode, and the
uid the appliance runs as — never a traceback, never "damaged"."""

from __future__ import annotations

import os
import stat

import pytest

from tests.deploy.conftest import APPLIANCE_UID, one_line_error
from tests.mounts import mounted_tmpfs, require_tmpfs

RUNS_AS = f"Sonae runs as uid {APPLIANCE_UID} (nobody)"


def test_a_key_mounted_for_another_uid_is_named_with_its_owner_and_mode(box):
    box.give(box.home)
    line = one_line_error(box.sonae("user", "list"))
    assert line == (f"Error: permission denied: Sonae cannot read {box.etc / 'master.key'}, owner uid 0 (root), gid 0 (root), "
                    f"mode 0600; {RUNS_AS}: give that uid access (chown or chmod), or run Sonae as the owner")


def test_a_key_owned_by_the_appliance_is_read(box):
    box.give(box.home)
    box.give(box.etc / "master.key")
    result = box.sonae("user", "list")
    assert result.returncode == 0, result.stderr


def test_the_counter_app_refuses_to_start_on_a_key_it_cannot_read(box):
    box.give(box.home)
    line = one_line_error(box.sonae("serve", "--port", "1"))
    assert f"cannot read {box.etc / 'master.key'}, owner uid 0 (root)" in line and RUNS_AS in line


def test_key_init_into_a_root_owned_folder_names_the_folder(box):
    line = one_line_error(box.sonae("key", "init", str(box.etc / "new.key")))
    assert line.startswith(f"Error: permission denied: Sonae cannot write {box.etc} (on the way to {box.etc / 'new.key'}")
    assert "owner uid 0 (root), gid 0 (root), mode 0755" in line and RUNS_AS in line
    assert not (box.etc / "new.key").exists()


def test_key_init_into_a_folder_of_the_appliance_writes_the_key(box):
    box.give(box.etc)
    result = box.sonae("key", "init", str(box.etc / "new.key"))
    assert result.returncode == 0, result.stderr
    written = (box.etc / "new.key").stat()
    assert written.st_uid == APPLIANCE_UID and stat.S_IMODE(written.st_mode) == 0o600


def test_a_root_owned_state_volume_is_a_permission_problem_not_damage(box):
    # root used the box first (a volume populated by hand, or a restore run as root)
    assert box.sonae("user", "list", uid=None).returncode == 0
    assert (box.home / "ops.db").exists()
    box.give(box.etc)
    for command in (("user", "list"), ("snapshot", "list"), ("serve", "--port", "1"), ("worker", "--list-jobs")):
        line = one_line_error(box.sonae(*command))
        assert line.startswith("Error: permission denied: Sonae cannot "), (command, line)
        assert f" {box.home}" in line and "owner uid 0 (root), gid 0 (root), mode 0700" in line, (command, line)
        assert RUNS_AS in line and "damaged" not in line and "rollback" not in line


def test_a_root_owned_database_inside_the_appliances_volume_is_named(box):
    assert box.sonae("user", "list", uid=None).returncode == 0
    box.give(box.etc)
    os.chown(box.home, APPLIANCE_UID, APPLIANCE_UID)  # the volume is the appliance's, what root left in it is not
    line = one_line_error(box.sonae("user", "add", "kakaricho", "--name", "係長", "--role", "supervisor",
                                    "--password", "a-long-enough-password"))
    assert line.startswith(f"Error: permission denied: Sonae cannot write {box.home / 'ops.db'}, owner uid 0 (root)"), line
    assert RUNS_AS in line and "damaged" not in line


def test_a_volume_owned_by_the_appliance_serves(box):
    assert box.sonae("user", "list", uid=None).returncode == 0
    box.give(box.etc)
    box.give(box.home)
    result = box.sonae("user", "list")
    assert result.returncode == 0, result.stderr


def test_the_services_refuse_to_start_on_a_signing_key_they_cannot_read(box):
    assert box.sonae("user", "list", uid=None).returncode == 0
    box.give(box.home)
    box.give(box.etc / "master.key")  # the master key is fine: only the signing key is root's
    for command in (("serve", "--port", "1"), ("worker",)):
        line = one_line_error(box.sonae(*command))
        assert line == (f"Error: permission denied: Sonae cannot read {box.etc / 'signing.key'}, owner uid 0 (root), gid 0 (root), "
                        f"mode 0600; {RUNS_AS}: give that uid access (chown or chmod), or run Sonae as the owner"), (command, line)


def test_the_services_refuse_to_start_on_a_signing_key_readable_by_others(box):
    assert box.sonae("user", "list", uid=None).returncode == 0
    box.give(box.etc)
    box.give(box.home)
    (box.etc / "signing.key").chmod(0o644)
    for command in (("serve", "--port", "1"), ("worker",)):
        line = one_line_error(box.sonae(*command))
        assert line == (f"Error: key file {box.etc / 'signing.key'} is readable by others (mode 0644); "
                        f"run `chmod 600 {box.etc / 'signing.key'}`"), (command, line)


def test_a_configuration_file_the_appliance_cannot_read_is_one_line(box):
    config = box.etc / "sonae.toml"
    config.write_text('[web]\nport = 8790\n', encoding="utf-8")
    config.chmod(0o600)  # root's copy of the example under umask 077
    box.give(box.home)
    box.give(box.etc / "master.key")
    box.give(box.etc / "signing.key")
    expected = (f"permission denied: Sonae cannot read {config}, owner uid 0 (root), gid 0 (root), mode 0600; {RUNS_AS}: "
                "give that uid access (chown or chmod), or run Sonae as the owner")
    for command in (("serve",), ("worker",), ("user", "list")):
        assert one_line_error(box.sonae(*command)) == f"Error: {expected}", command
    doctor = box.sonae("doctor")
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr, doctor.stderr
    assert doctor.stdout.splitlines() == [f"PROBLEM  configuration  {expected}"]


def test_a_configuration_file_the_appliance_can_read_is_used(box):
    config = box.etc / "sonae.toml"
    config.write_text('[web]\nport = 8790\n', encoding="utf-8")
    box.give(box.etc)
    config.chmod(0o600)
    # web.port comes from the file: nothing listens there
    assert one_line_error(box.sonae("health")) == "Error: http://127.0.0.1:8790/healthz: no answer (ConnectionError)"


def test_key_init_into_a_read_only_mount_says_read_only_not_a_failing_disk(box):
    require_tmpfs()
    with mounted_tmpfs(box.root / "ro-etc", "ro,size=1m,mode=0777") as mount_point:
        line = one_line_error(box.sonae("key", "init", str(mount_point / "master.key")))
    assert line == (f"Error: read-only file system: cannot write {mount_point / 'master.key.tmp'} (mounted read-only? compose mounts "
                    "/etc/sonae read-only: write keys with a writable mount, README \"Deploying with Docker\")")
    assert "dmesg" not in line and "SONAE_HOME" not in line


def test_key_init_into_a_writable_mount_writes_the_key(box):
    require_tmpfs()
    with mounted_tmpfs(box.root / "rw-etc", "size=1m,mode=0777") as mount_point:
        assert box.sonae("key", "init", str(mount_point / "master.key")).returncode == 0
        assert (mount_point / "master.key").stat().st_uid == APPLIANCE_UID


def token_box(box, *, owner: int) -> dict:
    token = box.etc / "upstream.token"
    token.write_text("a-bearer-token\n")
    token.chmod(0o600)
    box.give(box.home)
    for name in ("master.key", "signing.key"):
        box.give(box.etc / name)
    os.chown(token, owner, owner)
    return {"SONAE_UPSTREAM_TOKEN_FILE": str(token)}


def test_the_worker_refuses_to_start_on_a_token_file_it_cannot_read(box, monkeypatch):
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN_FILE", token_box(box, owner=0)["SONAE_UPSTREAM_TOKEN_FILE"])
    for command in (("worker",), ("worker", "--list-jobs")):
        assert one_line_error(box.sonae(*command)) == (
            f"Error: permission denied: Sonae cannot read {box.etc / 'upstream.token'}, owner uid 0 (root), gid 0 (root), mode 0600; "
            f"{RUNS_AS}: give that uid access (chown or chmod), or run Sonae as the owner"), command


def test_the_worker_starts_with_a_token_file_of_its_own(box, monkeypatch):
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN_FILE", token_box(box, owner=APPLIANCE_UID)["SONAE_UPSTREAM_TOKEN_FILE"])
    result = box.sonae("worker", "--list-jobs")
    assert result.returncode == 0, result.stderr


# --- a folder where a secret file should be: what `docker run -v FILE:FILE` makes of a missing FILE ---


def folder_in_place_of(path, mode: int) -> None:
    """Root's folder, as Docker creates it, where the file was to be mounted."""
    if path.exists():
        path.unlink()
    path.mkdir()
    path.chmod(mode)


def key_folder_line(path) -> str:
    return (f"{path} is a folder, not a key file (Docker makes a folder when the file to mount is missing): "
            f"remove it and write the key with `sonae key init {path}`")


@pytest.mark.parametrize("mode", [0o755, 0o700])
@pytest.mark.parametrize("name", ["master.key", "signing.key", "session.key"])
def test_a_key_path_that_is_a_folder_is_named_as_one_in_serve_and_doctor(box, name, mode):
    box.give(box.etc)
    box.give(box.home)
    folder_in_place_of(box.etc / name, mode)
    assert one_line_error(box.sonae("serve", "--port", "1")) == f"Error: {key_folder_line(box.etc / name)}"
    doctor = box.sonae("doctor")
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr, doctor.stderr
    what = {"master.key": "master key", "signing.key": "signing key", "session.key": "session key"}[name]
    assert f"PROBLEM  keys           {what} {key_folder_line(box.etc / name)}" in doctor.stdout.splitlines(), doctor.stdout


@pytest.mark.parametrize("mode", [0o755, 0o700])
def test_a_token_path_that_is_a_folder_is_named_as_one_in_the_worker_and_doctor(box, monkeypatch, mode):
    monkeypatch.setenv("SONAE_UPSTREAM_TOKEN_FILE", token_box(box, owner=APPLIANCE_UID)["SONAE_UPSTREAM_TOKEN_FILE"])
    monkeypatch.setenv("SONAE_UPSTREAM_URL", "https://127.0.0.1:9")  # no placeholder: the doctor's upstream check reads the token
    token = box.etc / "upstream.token"
    folder_in_place_of(token, mode)
    expected = (f"{token} is a folder, not a token file (Docker makes a folder when the file to mount is missing): "
                "remove it and put the vendor's bearer token there")
    assert one_line_error(box.sonae("worker", "--list-jobs")) == f"Error: {expected}"
    doctor = box.sonae("doctor")
    assert "Traceback" not in doctor.stderr, doctor.stderr
    assert f"PROBLEM  keys           upstream token {expected}" in doctor.stdout.splitlines(), doctor.stdout
    assert f"PROBLEM  upstream       {expected}" in doctor.stdout.splitlines(), doctor.stdout
