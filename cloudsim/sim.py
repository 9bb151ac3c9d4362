"""The running simulator: register, change feed, faults and both ports, and
`start_cloudsim`, the one call tests and the demo need."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from pathlib import Path

from cloudsim import store
from cloudsim.changes import ChangeFeed
from cloudsim.faults import FaultSwitches
from cloudsim.keys import KEY_FILE_NAME, load_or_create_key, public_key_b64
from cloudsim.parallel import default_workers
from cloudsim.register import Register, now_jst
from cloudsim.server import Listener, admin_app, contract_app, write_ready_file
from sync.synthetic import codes
from sync.synthetic.synth import RegisterSpec


class CloudSim:
    """A register served on two loopback ports, with its change feed, fault
    switches and export schedule. Made by `start_cloudsim`."""

    def __init__(self, register: Register, token: str, *, port: int = 0, admin_port: int = 0,
                 change_rate: float = 0.0, export_every: float | None = None):
        self.register = register
        self.token = token
        self.change_rate = change_rate
        self.export_every = export_every
        self.feed = ChangeFeed(register)
        self.faults = FaultSwitches(self._fault_changed)
        self.contract = Listener(contract_app(self), port)
        self.admin = Listener(admin_app(self), admin_port)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- what clients need to know ---------------------------------------------------

    @property
    def url(self) -> str:
        return self.contract.url

    @property
    def admin_url(self) -> str:
        return self.admin.url

    @property
    def public_key(self) -> str:
        return public_key_b64(self.register.private_key)

    @property
    def export_id(self) -> str:
        return self.register.latest_manifest()["export_id"]

    def info(self) -> dict:
        return {"url": self.url, "admin_url": self.admin_url, "token": self.token, "public_key": self.public_key,
                "export_id": self.export_id}

    def status(self) -> dict:
        connection = store.connect(self.register.db_path, readonly=True)
        try:
            last_seq = store.last_seq(connection)
            (residents,) = connection.execute("SELECT count(*) FROM residents").fetchone()
        finally:
            connection.close()
        return {**self.info(), "last_seq": last_seq, "residents": residents, "change_rate": self.change_rate,
                "export_every": self.export_every, "seed": self.register.spec.seed,
                "register_date": self.register.spec.register_date.isoformat(), "faults": sorted(self.faults.as_json()["active"])}

    def resident_now(self, code: str) -> tuple[dict | None, list[dict]]:
        """The resident with this code and their seals, as the register holds
        them now ((None, []) for a code it does not know)."""
        ordinal = codes.ordinal_of_resident_code(code)
        if ordinal is None:
            return None, []
        connection = store.connect(self.register.db_path, readonly=True)
        try:
            row = connection.execute("SELECT record FROM residents WHERE ordinal = ?", (ordinal,)).fetchone()
            seals = connection.execute("SELECT record FROM seals WHERE resident_ordinal = ? ORDER BY ordinal", (ordinal,)).fetchall()
        finally:
            connection.close()
        if row is None:
            return None, []
        return json.loads(row[0]), [json.loads(line) for (line,) in seals]

    # --- actions ---------------------------------------------------------------------------

    def publish(self) -> dict:
        return self.register.publish(halved=self.faults.active("halved_export") is not None)

    def _fault_changed(self, name: str, active: bool) -> None:
        if self._stopping.is_set():
            return
        if name == "down":
            (self.contract.close if active else self.contract.open)()
        elif name == "halved_export":
            # The short export is published the moment the fault is set, and a
            # complete one when it is cleared, as an upstream that recovered would.
            self.register.publish(halved=active)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> CloudSim:
        self.contract.open()
        self.admin.open()
        if self.change_rate > 0:
            self._spawn(self._make_changes_continuously, "cloudsim-changes")
        if self.export_every:
            self._spawn(self._publish_on_schedule, "cloudsim-exports")
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.faults.clear()
        for thread in self._threads:
            thread.join()
        self.contract.close()
        self.admin.close()

    def __enter__(self) -> CloudSim:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _make_changes_continuously(self) -> None:
        # change_rate is changes per minute; an event that made three changes
        # is followed by three intervals.
        made = 1
        while not self._stopping.wait(60.0 / self.change_rate * max(1, made)):
            made = self.feed.make(1)

    def _publish_on_schedule(self) -> None:
        while not self._stopping.wait(self.export_every):
            self.publish()


def start_cloudsim(
    state_dir: str | Path,
    *,
    residents: int = 20_000,
    seed: int = 1,
    register_date: dt.date | None = None,
    municipality_code: str = "131113",
    prefecture: str = "東京都",
    city: str = "大田区",
    individual_numbers: bool = False,
    token: str | None = None,
    key_file: str | Path | None = None,
    port: int = 0,
    admin_port: int = 0,
    change_rate: float = 0.0,
    export_every: float | None = None,
    workers: int | None = None,
    ready_file: str | Path | None = None,
) -> CloudSim:
    """Generate (or reuse) the register in `state_dir` and serve it.

    Port 0 picks free ports. Without `register_date` a reused state keeps its
    date and a new one is dated yesterday (Asia/Tokyo). Returns the running
    simulator: .url, .admin_url, .token, .public_key, .export_id, .stop().
    """
    state_dir = Path(state_dir)
    key_path = Path(key_file) if key_file else state_dir / KEY_FILE_NAME
    state_dir.mkdir(parents=True, exist_ok=True)
    private_key, _ = load_or_create_key(key_path)
    spec = RegisterSpec(residents=residents, seed=seed,
                        register_date=register_date or now_jst().date() - dt.timedelta(days=1),
                        municipality_code=municipality_code, prefecture=prefecture, city=city,
                        individual_numbers=individual_numbers)
    register = Register.open(state_dir, spec, private_key=private_key, workers=workers or default_workers(),
                             any_register_date=register_date is None)
    sim = CloudSim(register, token or secrets.token_urlsafe(24), port=port, admin_port=admin_port,
                   change_rate=change_rate, export_every=export_every).start()
    if ready_file:
        write_ready_file(Path(ready_file), {**sim.info(), "started_at": now_jst().isoformat()})
    return sim
