"""A full disk under SONAE_HOME: every API call that must write answers a
JSON error with a one-line cause (never Flask's HTML 500), the screens a
Japanese page that says what to do, the CLI names the fault ("disk is
full", "I/O error") and never calls it a wrong key; nothing is half done,
and the counter works again once space is freed."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from fallback.app import create_app
from fallback.config import load_config
from fallback.errors import storage_fault
from fallback.keys import ops_key
from fallback.ops import open_ops
from sync.crypto import DatabaseError, DiskError, WrongKeyError, connect, derive_key
from tests.mounts import require_tmpfs
from tests.support import PASSWORD, Staff, sonae, text_of

YAMADA_TARO = "10000000011"
SELF_REQUEST = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1}


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (where this process may mount one)."""
    require_tmpfs()
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(disk)], check=True, capture_output=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture
def home_on_small_disk(loaded_env, small_disk, monkeypatch):
    """The loaded appliance (register, accounts) with SONAE_HOME on the
    small disk; the keys stay outside it."""
    home = small_disk / "home"
    shutil.copytree(loaded_env.home, home)
    monkeypatch.setenv("SONAE_HOME", str(home))
    return load_config()


def fill(directory) -> None:
    """Take every free byte of the disk holding `directory`."""
    with open(directory / "filler", "wb", buffering=0) as filler:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while filler.write(b"\0" * chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert shutil.disk_usage(directory).free == 0


def assert_storage_answer(answer) -> dict:
    assert answer.status_code == 503 and answer.is_json, answer.get_data(as_text=True)[:300]
    body = answer.get_json()
    assert body["error"] == "storage"
    assert "\n" not in body["message"] and "ディスクがいっぱい" in body["message"]
    assert "\n" not in body["cause"] and body["cause"].startswith("the disk is full")
    return body


def test_the_api_answers_a_full_disk_in_json_with_its_cause(home_on_small_disk, small_disk):
    app = create_app(home_on_small_disk)
    app.config["TESTING"] = True
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    assert clerk.api("GET", "/api/v1/residents?kana=ヤマダ").status_code == 200  # the register is open, as on a busy day
    fill(small_disk)

    assert "database or disk is full" in assert_storage_answer(clerk.api("GET", "/api/v1/residents?kana=ヤマダ"))["cause"]  # its audit entry
    assert_storage_answer(clerk.api("GET", f"/api/v1/residents/{YAMADA_TARO}"))
    assert_storage_answer(clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST))
    stranger = app.test_client()
    csrf = stranger.get("/api/v1/session").get_json()["csrf_token"]
    assert_storage_answer(stranger.post("/api/v1/session", json={"username": "clerk2", "password": PASSWORD},
                                        headers={"X-CSRF-Token": csrf}))
    page = clerk.get("/counter/?kana=ヤマダ")
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert "ディスクがいっぱい" in text_of(page) and "情報政策課" in text_of(page)

    (small_disk / "filler").unlink()  # space again: the counter goes on, no serial was used up
    issued = clerk.api("POST", f"/api/v1/residents/{YAMADA_TARO}/certificates", json=SELF_REQUEST)
    assert issued.status_code == 201 and [c["serial"] for c in issued.get_json()["certificates"]] == [900001]


def test_with_space_the_same_calls_answer_normally(home_on_small_disk):
    app = create_app(home_on_small_disk)
    app.config["TESTING"] = True
    boss, clerk = Staff(app, "boss"), Staff(app, "clerk1")
    assert boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"}).status_code == 302
    assert clerk.api("GET", "/api/v1/residents?kana=ヤマダ").status_code == 200
    assert clerk.api("GET", f"/api/v1/residents/{YAMADA_TARO}").status_code == 200


def one_line(result) -> str:
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "wrong key" not in result.stderr and "damaged" not in result.stderr
    return result.stderr


def test_the_cli_names_a_write_to_ops_db_on_a_full_disk(home_on_small_disk, small_disk):
    held = open_ops(home_on_small_disk)  # a running server holds ops.db open: SQLite's own files exist
    try:
        fill(small_disk)
        refused = one_line(sonae("user", "add", "clerk9", "--name", "窓口 九郎", "--role", "clerk", "--password", PASSWORD))
    finally:
        held.close()
    assert "the disk is full (database or disk is full" in refused and "MB free of" in refused


def test_the_cli_names_opening_ops_db_on_a_full_disk_an_io_error_of_a_full_disk(home_on_small_disk, small_disk):
    """Opened afresh on a full disk, SQLite cannot even size its WAL index
    and says "disk I/O error" — which the old message called a wrong key."""
    fill(small_disk)
    opened = one_line(sonae("user", "list"))
    assert "I/O error" in opened and "the disk is full" in opened
    (small_disk / "filler").unlink()
    assert sonae("user", "list").returncode == 0


def test_only_a_key_that_does_not_decrypt_is_a_wrong_key(home_on_small_disk, small_disk):
    path, key = home_on_small_disk.ops_db_path, ops_key(home_on_small_disk)
    with pytest.raises(WrongKeyError, match="wrong key"):
        connect(path, derive_key(os.urandom(32), "ops"))
    fill(small_disk)
    with pytest.raises(DiskError, match="disk I/O error") as raised:
        connect(path, key)  # the right key, on a disk too full to open the file
    assert not isinstance(raised.value, WrongKeyError)
    (small_disk / "filler").unlink()
    connect(path, key).close()


@pytest.mark.parametrize("said, named", [
    ("database or disk is full", "the disk is full"),
    ("disk I/O error", "I/O error on the disk"),
    ("database is locked", "locked by another process"),
    ("file is not a database", None),
    ("no such table: requests", None),
])
def test_sqlites_words_for_the_disk_are_named_and_nothing_else_is(tmp_path, said, named):
    fault = storage_fault(DatabaseError(said), tmp_path)
    if named is None:
        assert fault is None
    else:
        assert named in fault.reason and fault.status == 503 and fault.code == "storage" and "\n" not in fault.reason


@pytest.mark.parametrize("code, named", [(errno.ENOSPC, "the disk is full"), (errno.EIO, "I/O error"), (errno.EACCES, None)])
def test_the_oss_words_for_the_disk_are_named_and_nothing_else_is(tmp_path, code, named):
    fault = storage_fault(OSError(code, os.strerror(code), str(tmp_path / "audit-anchor.json")), tmp_path)
    if named is None:
        assert fault is None
    else:
        assert named in fault.reason and fault.code == "storage"
