"""The pair's engines, checked around what this machine cannot run (the
DRBD kernel module, a second box, a BMC): deploy/pair/'s Pacemaker
configuration passes crm_verify and, played by crm_simulate, takes over in
the order the application needs — the failed box fenced, then DRBD
promoted, the filesystem mounted, the worker, the counter app, the
service address; the DRBD resource and corosync's configuration parse as
each box; the systemd drop-in verifies; the two boxes' settings load and
claim disjoint ranges."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fallback import ops
from fallback.config import load_config
from fallback.counter import issuance
from tests.pair.boxes import require_other_hosts

ROOT = Path(__file__).resolve().parents[2]
PAIR = ROOT / "deploy" / "pair"
BOXES = ("sonae-1", "sonae-2")
SONAE = ("sonae-fs", "sonae-worker", "sonae-serve", "sonae-address")  # the group, in start order


def tool(name: str, path: str | None = None) -> str:
    found = path if path and Path(path).exists() else shutil.which(name)
    assert found, f"{name} is missing: `make test-system-packages` installs pacemaker-cli-utils and drbd-utils"
    return found


class Cluster:
    """The pair's CIB with both boxes up, the cluster quorate, DRBD up to
    date on both and the gateway answering both — as the resource agents
    report it on a live pair (crm_simulate runs no agent)."""

    def __init__(self, path: Path):
        self.path = path
        cib = ET.parse(PAIR / "cib.xml")
        cib.getroot().set("have-quorum", "1")
        cib.write(path)
        self.simulate("--node-up", BOXES[0], "--node-up", BOXES[1])
        for box in BOXES:
            self.set_attributes(box, {"master-drbd-sonae": "10000", "pingd": "1000"})
        self.started = self.simulate()  # what the cluster did first

    def simulate(self, *events: str) -> list[str]:
        """Apply the events, let the cluster react, keep the result; the
        actions taken, in order ("promote drbd-sonae on sonae-1", "fence sonae-1")."""
        played = subprocess.run([tool("crm_simulate"), "--xml-file", str(self.path), "--in-place", "--simulate", *events],
                                capture_output=True, text=True)
        assert played.returncode == 0, played.stderr
        transition = played.stdout.split("Executing Cluster Transition:", 1)[1].split("Revised Cluster Status:", 1)[0]
        actions = []
        for line in transition.splitlines():
            if match := re.match(r"\s*\* Resource action: (\S+?)(?::\d+)?\s+(\w+) on (\S+)", line):
                actions.append(f"{match[2]} {match[1]} on {match[3]}")
            elif match := re.match(r"\s*\* Fencing (\S+)", line):
                actions.append(f"fence {match[1]}")
        return actions

    def set_attributes(self, box: str, attributes: dict[str, str]) -> None:
        """What the resource agents report of a box (DRBD's promotion score, the gateway's ping)."""
        cib = ET.parse(self.path)
        state = next(s for s in cib.getroot().find("status") if s.get("uname") == box)
        transient = state.find("transient_attributes") or ET.SubElement(state, "transient_attributes", id=state.get("id"))
        values = transient.find("instance_attributes") or ET.SubElement(transient, "instance_attributes", id=f"status-{state.get('id')}")
        for name, value in attributes.items():
            pair = next((p for p in values if p.get("name") == name), None) or ET.SubElement(
                values, "nvpair", id=f"status-{state.get('id')}-{name}", name=name)
            pair.set("value", value)
        cib.write(self.path)

    def where(self) -> str:
        """The box that runs the counter app (crm_simulate's view)."""
        shown = subprocess.run([tool("crm_simulate"), "--xml-file", str(self.path)], capture_output=True, text=True, check=True).stdout
        return re.search(r"sonae-serve\s+\(systemd:sonae-serve\):\s+Started (\S+)", shown)[1]


def starts_in_order(actions: list[str], box: str) -> bool:
    """DRBD promoted on `box`, then the group started there in order."""
    wanted = [f"promote drbd-sonae on {box}", *(f"start {name} on {box}" for name in SONAE)]
    positions = [actions.index(step) for step in wanted if step in actions]
    return len(positions) == len(wanted) and positions == sorted(positions)


@pytest.fixture
def cluster(tmp_path) -> Cluster:
    return Cluster(tmp_path / "cib.xml")


def test_the_configuration_passes_crm_verify_and_a_broken_one_does_not(cluster, tmp_path):
    verified = subprocess.run([tool("crm_verify"), "--xml-file", str(cluster.path), "-V"], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    unfenced = ET.parse(cluster.path)  # without fencing, a cut cable would let both boxes take the disk
    configuration = unfenced.getroot().find("configuration")
    for section, element in (("resources", "primitive[@class='stonith']"), ("constraints", "rsc_location[@rsc]")):
        for fencing in [e for e in configuration.find(section).findall(element) if e.get("id").startswith("fence-")]:
            configuration.find(section).remove(fencing)
    unfenced.write(tmp_path / "unfenced.xml")
    refused = subprocess.run([tool("crm_verify"), "--xml-file", str(tmp_path / "unfenced.xml"), "-V"], capture_output=True, text=True)
    assert refused.returncode != 0 and "STONITH" in refused.stderr, refused.stderr


def test_sonae_starts_on_one_box_once_its_drbd_disk_is_promoted(cluster):
    box = cluster.where()
    assert starts_in_order(cluster.started, box), cluster.started
    assert not any(a.startswith(("start sonae", "promote")) and not a.endswith(box) for a in cluster.started), cluster.started


def test_a_failed_box_is_fenced_before_the_other_takes_its_disk_and_its_service(cluster):
    active = cluster.where()
    standby = next(box for box in BOXES if box != active)
    actions = cluster.simulate("--node-fail", active)
    assert actions[0] == f"fence {active}", actions
    assert starts_in_order(actions, standby), actions
    assert cluster.where() == standby


def test_a_box_cut_off_from_the_counters_hands_over_without_being_fenced(cluster):
    active = cluster.where()
    standby = next(box for box in BOXES if box != active)
    cluster.set_attributes(active, {"pingd": "0"})
    actions = cluster.simulate()
    stops = [actions.index(f"stop {name} on {active}") for name in reversed(SONAE)]
    assert stops == sorted(stops) and actions.index(f"demote drbd-sonae on {active}") > stops[-1], actions
    assert starts_in_order(actions, standby) and not any(a.startswith("fence") for a in actions), actions


def test_the_failed_box_rejoins_without_taking_the_service_back(cluster):
    first = cluster.where()
    cluster.simulate("--node-fail", first)
    second = cluster.where()
    actions = cluster.simulate("--node-up", first)
    cluster.set_attributes(first, {"master-drbd-sonae": "10000", "pingd": "1000"})  # resynchronised, up to date again
    actions += cluster.simulate()
    moves = [a for a in actions if a.split()[0] in ("start", "stop", "promote", "demote") and a.split()[1] in (*SONAE, "drbd-sonae")]
    assert moves == [f"start drbd-sonae on {first}"], actions  # probes aside, nothing else happens
    assert cluster.where() == second


def test_a_crashed_counter_app_restarts_on_its_box(cluster):
    active = cluster.where()
    actions = cluster.simulate("--op-inject", f"sonae-serve_monitor_10000@{active}=7")  # 7: not running
    assert f"stop sonae-serve on {active}" in actions and f"start sonae-serve on {active}" in actions, actions
    assert not any(a.startswith(("fence", "promote", "demote")) for a in actions) and cluster.where() == active


def test_the_cib_uses_the_drbd_resource_and_device_of_sonae_res():
    resource = (PAIR / "sonae.res").read_text()
    cib = (PAIR / "cib.xml").read_text()
    assert re.search(r"^resource (\S+) \{", resource, re.M)[1] == re.search(r'name="drbd_resource" value="([^"]+)"', cib)[1]
    assert re.search(r"device\s+(\S+);", resource)[1] == re.search(r'name="device" value="([^"]+)"', cib)[1]
    assert re.search(r'name="directory" value="([^"]+)"', cib)[1] == "/var/lib/sonae"  # the units' SONAE_HOME


@pytest.mark.parametrize("box", BOXES)
def test_the_drbd_resource_is_replicated_synchronously_as_each_box_reads_it(box):
    require_other_hosts()
    drbdadm = tool("drbdadm-84", "/usr/lib/drbd/drbdadm-84")  # Debian 12's kernel has DRBD 8.4
    dry_run = subprocess.run(["unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", box,
                              drbdadm, "--dry-run", "-c", str(PAIR / "sonae.res"), "up", "sonae"], capture_output=True, text=True)
    assert dry_run.returncode == 0, dry_run.stderr
    attach = next(line for line in dry_run.stdout.splitlines() if " attach " in line)
    connect = next(line for line in dry_run.stdout.splitlines() if " connect " in line)
    assert "--fencing=resource-and-stonith" in attach and "--on-io-error=detach" in attach
    assert "--protocol=C" in connect and "--after-sb-1pri=disconnect" in connect and "--after-sb-2pri=disconnect" in connect


def test_a_misspelt_drbd_option_is_refused(tmp_path):
    drbdadm = tool("drbdadm-84", "/usr/lib/drbd/drbdadm-84")
    broken = tmp_path / "sonae.res"
    broken.write_text((PAIR / "sonae.res").read_text().replace("protocol C;", "protokol C;"))
    parsed = subprocess.run([drbdadm, "-c", str(broken), "dump", "sonae"], capture_output=True, text=True)
    assert parsed.returncode != 0 and "protokol" in parsed.stderr


@pytest.mark.parametrize("box", BOXES)
def test_corosync_accepts_its_configuration_as_each_box(box, tmp_path):
    require_other_hosts()
    key = tmp_path / "authkey"
    key.write_bytes(bytes(range(256)))
    config = tmp_path / "corosync.conf"
    config.write_text((PAIR / "corosync.conf").read_text().replace("/etc/corosync/authkey", str(key)))
    tested = subprocess.run(["unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", box,
                             tool("corosync"), "-t", "-c", str(config)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stderr
    assert "two_node: 1" in config.read_text() and config.read_text().count("ring1_addr") == 2


def test_the_systemd_drop_in_verifies_and_is_read(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test-system-packages` installs Debian's systemd package"
    sonae = Path(sys.executable).with_name("sonae")
    units = []
    for name in ("sonae-serve.service", "sonae-worker.service"):
        unit = tmp_path / name
        unit.write_text((ROOT / "deploy" / "systemd" / name).read_text().replace("/opt/sonae/venv/bin/sonae", str(sonae)))
        (tmp_path / f"{name}.d").mkdir()
        shutil.copy(PAIR / "sonae-pair.conf", tmp_path / f"{name}.d" / "pair.conf")
        units.append(str(unit))
    verified = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    drop_in = tmp_path / "sonae-serve.service.d" / "pair.conf"
    drop_in.write_text(drop_in.read_text().replace("ConditionPathIsMountPoint", "ConditionPathIsMountpoint"))
    misspelt = subprocess.run([analyze, "verify", units[0]], capture_output=True, text=True)
    assert "pair.conf" in misspelt.stderr and "ConditionPathIsMountpoint" in misspelt.stderr


def test_the_two_boxes_settings_load_and_claim_disjoint_ranges(sonae_env):
    boxes = [load_config(PAIR / f"box-{number}.toml", env={"SONAE_HOME": str(sonae_env.home)}) for number in (1, 2)]
    assert boxes[0]["counter"]["box_id"] != boxes[1]["counter"]["box_id"]
    for config in boxes:
        anchor = Path(config["security"]["audit_anchor_file"])
        assert not anchor.is_relative_to("/var/lib/sonae"), "the anchor must be on the box's own disk, not the replicated one"
        assert anchor.parent == Path("/var/lib/sonae-box")  # the drop-in's StateDirectory=sonae-box
    conn = ops.open_ops(sonae_env)
    for config in boxes:  # as on one ops.db, one box after the other
        issuance.claim_serial_ranges(conn, config["counter"])
    assert conn.execute("SELECT count(*) FROM serial_counters").fetchone()[0] == 4
