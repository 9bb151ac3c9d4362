"""The state directory: the register database, its exports, and what they
were generated from.

    <state dir>/register.sqlite     current state, change feed, metadata
    <state dir>/exports/<export_id>/ manifest.json + the two files
    <state dir>/signing.key         default place of the signing key

Starting again with the same spec reuses all of it (a restart of the demo
takes a second, not a minute); a different spec regenerates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import sqlite3
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudsim import exports, store
from cloudsim.generate import generate_register
from sync.contract import ContractError, sign, verify_manifest
from sync.synthetic.synth import JST, RegisterSpec

# Bump when the generator changes what a spec produces, so that old state
# directories are regenerated instead of reused.
GENERATOR_VERSION = 2  # 2: the items of contract 2
DB_NAME = "register.sqlite"
KEEP_EXPORTS = 3  # older ones are deleted; a client still reading one keeps its open file


def now_jst() -> dt.datetime:
    return dt.datetime.now(JST).replace(microsecond=0)


def as_of_now() -> str:
    """The as_of of a change page or a look-up: to the microsecond, like the
    `at` of the changes, so that a page is never older than a change it
    follows (the client refuses an answer older than the data it holds)."""
    return dt.datetime.now(JST).isoformat()


def spec_to_json(spec: RegisterSpec) -> dict:
    data = dataclasses.asdict(spec)
    data["register_date"] = spec.register_date.isoformat()
    return {"generator": GENERATOR_VERSION, **data}


def spec_from_json(data: dict) -> RegisterSpec:
    fields = {k: v for k, v in data.items() if k != "generator"}
    fields["register_date"] = dt.date.fromisoformat(fields["register_date"])
    return RegisterSpec(**fields)


class Register:
    """One state directory. `lock` serialises everything that writes the
    register or reads it for an export, so that an export is consistent with
    its last_seq."""

    def __init__(self, state_dir: Path, spec: RegisterSpec, private_key: Ed25519PrivateKey, workers: int, reused: bool):
        self.state_dir = state_dir
        self.spec = spec
        self.private_key = private_key
        self.workers = workers
        self.reused = reused
        self.db_path = state_dir / DB_NAME
        self.exports_dir = state_dir / "exports"
        self.lock = threading.RLock()
        self.publishing = threading.Event()  # health reports the batch as running meanwhile
        self._latest = self._read_latest()

    @classmethod
    def open(cls, state_dir: Path, spec: RegisterSpec, *, private_key: Ed25519PrivateKey, workers: int,
             any_register_date: bool = False) -> Register:
        """Reuse the state in `state_dir` if it holds `spec` (with
        any_register_date, whatever its date), else generate it anew."""
        state_dir.mkdir(parents=True, exist_ok=True)
        stored = stored_spec(state_dir / DB_NAME)
        if stored is not None and latest_export_exists(state_dir):
            wanted = dataclasses.replace(spec, register_date=stored.register_date) if any_register_date else spec
            if stored == wanted:
                register = cls(state_dir, stored, private_key, workers, reused=True)
                register.sign_latest_with_current_key()
                return register
        cls._generate(state_dir, spec, workers, private_key)
        return cls(state_dir, spec, private_key, workers, reused=False)

    @staticmethod
    def _generate(state_dir: Path, spec: RegisterSpec, workers: int, private_key: Ed25519PrivateKey) -> None:
        db_path, exports_dir = state_dir / DB_NAME, state_dir / "exports"
        shutil.rmtree(exports_dir, ignore_errors=True)
        exports_dir.mkdir()
        generate_register(db_path, spec, workers)
        export_id = f"{spec.as_of}-0001"
        exports.write_export(db_path, exports_dir, export_id=export_id, export_seq=1, as_of=spec.as_of, last_seq=0,
                             municipality=spec.municipality, private_key=private_key, workers=workers)
        connection = store.connect(db_path)
        try:
            with connection:
                people, seals = store.ordinal_bound(connection, "residents"), store.ordinal_bound(connection, "seals")
                # Numbers the change feed hands out continue after the generated ones.
                for key, value in (("latest_export", export_id), ("export_counter", 1),
                                   ("next_person_ordinal", people), ("feed_first_person_ordinal", people),
                                   ("next_seal_ordinal", seals), ("feed_first_seal_ordinal", seals),
                                   # The spec marks the state complete: a directory without it is regenerated.
                                   ("spec", spec_to_json(spec))):
                    store.set_meta(connection, key, value)
        finally:
            connection.close()

    # --- reading ---------------------------------------------------------------

    def connect(self):
        return store.connect(self.db_path)

    def latest_manifest(self) -> dict:
        return self._latest

    def export_directory(self, export_id: str) -> Path | None:
        if "/" in export_id or export_id.startswith("."):
            return None
        directory = self.exports_dir / export_id
        return directory if (directory / exports.MANIFEST).exists() else None

    def _read_latest(self) -> dict:
        connection = store.connect(self.db_path, readonly=True)
        try:
            export_id = store.get_meta(connection, "latest_export")
        finally:
            connection.close()
        return exports.read_manifest(self.exports_dir / export_id)

    # --- writing -----------------------------------------------------------------

    def publish(self, halved: bool = False) -> dict:
        """A new full export of the register as it is now, consistent with the
        change feed's last seq; becomes the latest."""
        with self.lock:
            self.publishing.set()
            try:
                return self._publish(halved)
            finally:
                self.publishing.clear()

    def _publish(self, halved: bool) -> dict:
        connection = self.connect()
        try:
            counter = store.get_meta(connection, "export_counter") + 1
            last_seq = store.last_seq(connection)
            as_of = now_jst().isoformat()
            export_id = f"{as_of}-{counter:04d}"
            manifest = exports.write_export(self.db_path, self.exports_dir, export_id=export_id, export_seq=counter, as_of=as_of,
                                            last_seq=last_seq, municipality=self.spec.municipality,
                                            private_key=self.private_key, workers=self.workers, halved=halved)
            with connection:
                store.set_meta(connection, "export_counter", counter)
                store.set_meta(connection, "latest_export", export_id)
        finally:
            connection.close()
        self._latest = manifest
        self._prune()
        return manifest

    def _prune(self) -> None:
        def counter(path: Path) -> int:
            return int(path.name.rsplit("-", 1)[1])

        directories = sorted((p for p in self.exports_dir.iterdir() if not p.name.startswith(".")), key=counter)
        for old in directories[:-KEEP_EXPORTS]:
            shutil.rmtree(old, ignore_errors=True)

    def sign_latest_with_current_key(self) -> None:
        """A reused state directory may have been signed by another key: the
        latest manifest must verify against the key served now."""
        try:
            verify_manifest(self._latest, self.private_key.public_key())
        except ContractError:
            self._latest = sign(self._latest, self.private_key)
            exports.write_manifest(self.exports_dir / self._latest["export_id"], self._latest)


def latest_export_exists(state_dir: Path) -> bool:
    connection = store.connect(state_dir / DB_NAME, readonly=True)
    try:
        export_id = store.get_meta(connection, "latest_export")
    finally:
        connection.close()
    return export_id is not None and (state_dir / "exports" / export_id / exports.MANIFEST).exists()


def stored_spec(db_path: Path) -> RegisterSpec | None:
    """The spec a complete register database was generated from, if any."""
    if not db_path.exists():
        return None
    connection = store.connect(db_path, readonly=True)
    try:
        data = store.get_meta(connection, "spec")
    except sqlite3.DatabaseError:  # an unreadable or half-written file is regenerated
        return None
    finally:
        connection.close()
    if data is None or data.get("generator") != GENERATOR_VERSION:
        return None
    return spec_from_json(data)
