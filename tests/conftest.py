"""Fixtures shared by every area's tests (helpers live in tests/support.py)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from printing.model import SPECIMEN_SEAL_IMAGE
from tests.support import (  # noqa: F401  (re-exported for older imports)
    ACCOUNTS,
    EXAMPLE_EXPORT,
    EXAMPLE_PUBLIC_KEY,
    FIXTURES,
    PASSWORD,
    Staff,
    example_records,
    text_of,
    write_export,
    write_key,
)

KEY_FILES = ("master.key", "signing.key")


def pytest_collection_modifyitems(items):
    """`make test` runs the suite in parallel (pytest-xdist, one test file
    per worker at a time), which schedules by node id: two items with one
    id would run once. schemathesis names an item per API operation
    (`test[GET /api/v1/status]`) but under pytest 9 gives them all the test
    function's id, so each gets the operation as its id's parameter; any
    other duplicate stops the run instead of silently running less."""
    for item in items:
        base, _, name = item.nodeid.rpartition("::")
        if name != item.name and item.name.startswith(f"{name}[") and item.name.endswith("]"):
            item._id = item._id.with_params(item.name[len(name) + 1:-1])
    duplicates = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if duplicates:
        raise pytest.UsageError(f"tests with the same node id would run once in parallel: {', '.join(duplicates)}")


def _configure(root, monkeypatch, *, keys_from=None):
    from fallback.config import load_config

    home, etc = root / "home", root / "etc"
    home.mkdir(parents=True, exist_ok=True)
    etc.mkdir(parents=True, exist_ok=True)
    for name in KEY_FILES:
        if keys_from is None:
            write_key(etc / name)
        else:
            shutil.copy2(keys_from / name, etc / name)
    monkeypatch.setenv("SONAE_HOME", str(home))
    monkeypatch.setenv("SONAE_CONFIG", str(etc / "sonae.toml"))
    monkeypatch.setenv("SONAE_SECURITY_KEY_FILE", str(etc / "master.key"))
    monkeypatch.setenv("SONAE_SECURITY_SIGNING_KEY_FILE", str(etc / "signing.key"))
    monkeypatch.setenv("SONAE_SECURITY_SECRET_KEY_FILE", str(etc / "session.key"))
    monkeypatch.setenv("SONAE_UPSTREAM_PUBLIC_KEY", EXAMPLE_PUBLIC_KEY)
    monkeypatch.setenv("SONAE_UPSTREAM_ALLOW_INSECURE_HTTP", "true")  # the tests' upstreams serve http on loopback
    monkeypatch.setenv("SONAE_DISK_RESERVE_MB", "1")  # the disk reserve, kept small: tests/fallback/test_disk.py sizes its own
    monkeypatch.setenv("SONAE_PRINTING_OFFICIAL_SEAL_IMAGE", str(SPECIMEN_SEAL_IMAGE))  # the synthetic 見本 電子公印
    return load_config()


@pytest.fixture
def sonae_env(tmp_path, monkeypatch):
    """A configured appliance home with keys outside it, as on a real box:
    returns the loaded Config."""
    return _configure(tmp_path, monkeypatch)


@pytest.fixture
def fresh_example_export(tmp_path):
    """The example register, re-signed with a data-as-of of now."""
    return write_export(tmp_path / "export", example_records("residents"), example_records("seals"))


@pytest.fixture(scope="session")
def loaded_template(tmp_path_factory):
    """Built once per test run: a home with the example register loaded
    through the real sync and one account per role (Argon2 hashing and a
    full load per test would dominate the suite's time)."""
    from fallback.mirror.syncing import run_full_sync
    from fallback.ops import open_ops
    from fallback.staff import users

    root = tmp_path_factory.mktemp("loaded-appliance")
    with pytest.MonkeyPatch.context() as monkeypatch:
        config = _configure(root, monkeypatch)
        export = write_export(root / "export", example_records("residents"), example_records("seals"))
        run_full_sync(config, source_dir=export)
        conn = open_ops(config)
        for username, role in ACCOUNTS.items():
            users.add_user(conn, username, username, role, PASSWORD, actor="test")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    return root


def _crowded_records() -> tuple[list[dict], list[dict]]:
    """61 residents whose kana begins with ミナ, for the search's cap of
    50 results: 50 ミナミ born 1980-01-01, one ミナモト born that day, 10
    ミナト born 1990-01-01; and, in the household of the first ミナミ (as
    its second member), one removed former member (スズキ)."""
    template, removed = (next(r for r in example_records("residents") if r["resident_code"] == code)
                         for code in ("10000000011", "10000000095"))
    people = [("南\u3000太郎", "ミナミ\u3000タロウ", "1980-01-01")] * 50 + [("源\u3000花子", "ミナモト\u3000ハナコ", "1980-01-01")] + \
        [("湊\u3000健", "ミナト\u3000ケン", "1990-01-01")] * 10
    residents = [{**template, "resident_code": f"{30000000000 + i:011d}", "atena_number": f"C{i:08d}", "household_id": f"{200000 + i:010d}",
                  "household_order": 2 if i == 0 else 1, "name": name, "head_name": name, "hitto": name, "name_kana": kana,
                  "furigana": kana, "birth_date": birth, "individual_number": None}
                 for i, (name, kana, birth) in enumerate(people)]
    residents.append({**removed, "household_id": residents[0]["household_id"], "household_order": 1})
    return residents, []


REGISTERS = {"example": lambda: (example_records("residents"), example_records("seals")), "crowded": _crowded_records}


@functools.cache
def _register_config(name: str):
    """A register of REGISTERS loaded through the real sync once per
    process, outlasting pytest sessions: mutation testing runs a session per
    mutant in a process forked from one that already loaded it (README
    "Mutation testing"). Removed at exit by the process that made it, never
    by a fork."""
    from fallback.mirror.syncing import run_full_sync

    root, owner = Path(tempfile.mkdtemp(prefix=f"sonae-{name}-register-")), os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(root, ignore_errors=True))
    with pytest.MonkeyPatch.context() as monkeypatch:
        config = _configure(root, monkeypatch)
        run_full_sync(config, source_dir=write_export(root / "export", *REGISTERS[name]()))
    return config


def _open_register(name: str):
    from fallback.mirror.registry import snapshot_store

    return snapshot_store(_register_config(name)).open_register()


@pytest.fixture
def example_register():
    """The example register, read-only, as the counter reads it (a rule
    test that issues nothing needs no app and no accounts)."""
    register = _open_register("example")
    yield register
    register.close()


@pytest.fixture
def crowded_register():
    """A register in which a search finds more than 50 residents
    (`_crowded_records`), read-only."""
    register = _open_register("crowded")
    yield register
    register.close()


@pytest.fixture
def loaded_env(tmp_path, monkeypatch, loaded_template):
    """A private copy of the loaded template (register, accounts, keys):
    returns its Config."""
    shutil.copytree(loaded_template / "home", tmp_path / "home")
    return _configure(tmp_path, monkeypatch, keys_from=loaded_template / "etc")


@pytest.fixture
def appliance(loaded_env):
    """The real Flask app over a loaded appliance."""
    from fallback.app import create_app

    app = create_app(loaded_env)
    app.config["TESTING"] = True
    return app


def write_config(**sections) -> None:
    """Write `sections` as the real TOML file SONAE_CONFIG names (replacing
    what a previous call wrote). A key the environment also sets would be
    shadowed by it, so that is refused here rather than ignored."""
    from fallback.config import render_toml

    shadowed = [f"SONAE_{section}_{key}".upper() for section, items in sections.items() for key in items
                if f"SONAE_{section}_{key}".upper() in os.environ]
    assert not shadowed, f"the environment overrides {shadowed}: change it with monkeypatch.setenv instead"
    Path(os.environ["SONAE_CONFIG"]).write_text(render_toml(sections), encoding="utf-8")


@pytest.fixture
def configure_app(loaded_env):
    """`configure_app(counter={"max_copies": 3}, ...)`: a fresh app over the
    same loaded home (register, accounts, mode, sessions), configured with
    these overrides written to its TOML file. A loaded configuration is
    read-only: a test that needs another setting builds another app."""
    from fallback.app import create_app
    from fallback.config import load_config

    def build(**sections):
        write_config(**sections)
        app = create_app(load_config())
        app.config["TESTING"] = True
        return app

    return build


@pytest.fixture
def login(appliance):
    return lambda username, terminal="本庁1": Staff(appliance, username, terminal)


@pytest.fixture
def downtime(login):
    """A supervisor has declared downtime, as on the day."""
    boss = login("boss")
    response = boss.post("/supervisor/mode", {"to_mode": "downtime", "reason": "住民記録システム障害"})
    assert response.status_code == 302
    return boss
