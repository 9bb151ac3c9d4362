"""Every fault switch: what a client observes while it is on, and that
clearing it restores the service."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.cloudsim.client import ExportRefused, FeedBroken, get, read_export, read_feed
from tests.cloudsim.conftest import RESIDENTS, TOKEN

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def set_fault(sim, name: str, **body) -> dict:
    response = requests.put(f"{sim.admin_url}/admin/faults/{name}", json=body, headers=ADMIN, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def clear_fault(sim, name: str | None = None) -> None:
    path = f"/admin/faults/{name}" if name else "/admin/faults"
    assert requests.delete(sim.admin_url + path, headers=ADMIN, timeout=60).status_code == 200


@pytest.fixture(autouse=True)
def no_fault_left_on(sim):
    yield
    clear_fault(sim)


def healthy(sim) -> bool:
    return get(sim.url, TOKEN, "/v1/health").json()["status"] == "ok"


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_down_closes_the_port_and_clear_reopens_it(sim):
    port = sim.contract.port
    set_fault(sim, "down")
    assert refuses_connections(port)
    with pytest.raises(requests.ConnectionError):
        get(sim.url, TOKEN, "/v1/health")
    assert requests.get(sim.admin_url + "/admin/status", headers=ADMIN, timeout=10).json()["faults"] == ["down"]
    clear_fault(sim, "down")
    assert not refuses_connections(port)
    assert healthy(sim)


def test_a_fault_with_a_duration_switches_itself_off(sim):
    set_fault(sim, "down", duration=3)  # long past the answer to this request, even on a busy machine
    assert refuses_connections(sim.contract.port)
    deadline = time.monotonic() + 30
    while refuses_connections(sim.contract.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert healthy(sim)


def test_down_cuts_a_download_in_flight(sim):
    manifest = get(sim.url, TOKEN, "/v1/exports/latest").json()
    entry = max(manifest["files"], key=lambda f: f["bytes"])
    from tests.cloudsim.client import file_path

    response = get(sim.url, TOKEN, file_path(manifest["export_id"], entry["name"]), stream=True)
    first = next(response.iter_content(4096))
    set_fault(sim, "down")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        received = len(first) + sum(len(block) for block in response.iter_content(1 << 16))
        assert received == entry["bytes"]  # not reached: the stream is cut off


def test_slow_delays_every_request(sim):
    set_fault(sim, "slow", seconds=4)
    started = time.monotonic()
    assert healthy(sim)
    assert time.monotonic() - started >= 4
    clear_fault(sim, "slow")
    started = time.monotonic()
    healthy(sim)
    assert time.monotonic() - started < 4  # an answer a busy machine stalls is still far from the delay


def test_error5xx_answers_503_and_health_reports_the_register_down(sim):
    set_fault(sim, "error5xx")
    for path in ("/v1/exports/latest", "/v1/changes?after=0", "/v1/residents/10000000014"):
        response = get(sim.url, TOKEN, path)
        assert response.status_code == 503
        assert response.json()["error"] == "service_unavailable"
    health = get(sim.url, TOKEN, "/v1/health")
    assert health.status_code == 503
    assert health.json()["status"] == "down" and health.json()["components"]["register"] == "down"
    clear_fault(sim, "error5xx")
    assert healthy(sim)


def test_juki_net_down_degrades_health_only(sim):
    set_fault(sim, "juki_net_down")
    body = get(sim.url, TOKEN, "/v1/health").json()
    assert body["status"] == "degraded"
    assert body["components"] == {"register": "ok", "juki_net": "down", "batch": "done"}
    assert get(sim.url, TOKEN, "/v1/exports/latest").status_code == 200
    clear_fault(sim, "juki_net_down")
    assert healthy(sim)


def test_batch_stuck_reports_the_batch_running(sim):
    set_fault(sim, "batch_stuck")
    body = get(sim.url, TOKEN, "/v1/health").json()
    assert body["status"] == "degraded" and body["components"]["batch"] == "running"
    clear_fault(sim, "batch_stuck")
    assert healthy(sim)


@pytest.mark.parametrize("fault, refusal", [
    ("truncated_file", "bytes, manifest says"),
    ("bytes_mismatch", "sha256 differs"),
    ("bad_signature", "signature"),
])
def test_a_client_refuses_a_damaged_export(sim, fault, refusal):
    set_fault(sim, fault)
    with pytest.raises(ExportRefused, match=refusal):
        read_export(sim.url, TOKEN, sim.public_key)
    clear_fault(sim, fault)
    read_export(sim.url, TOKEN, sim.public_key)


def test_bad_signature_spoils_pages_and_look_ups_too(sim):
    from tests.cloudsim.client import AnswerRefused, read_resident

    _, records = read_export(sim.url, TOKEN, sim.public_key)
    set_fault(sim, "bad_signature")
    with pytest.raises(AnswerRefused, match="change-feed page signature does not verify"):
        read_feed(sim.url, TOKEN, sim.public_key, after=0)
    with pytest.raises(AnswerRefused, match="resident look-up signature does not verify"):
        read_resident(sim.url, TOKEN, sim.public_key, records["residents"][0]["resident_code"])
    clear_fault(sim, "bad_signature")
    assert read_resident(sim.url, TOKEN, sim.public_key, records["residents"][0]["resident_code"]) == records["residents"][0]


def test_a_truncated_file_does_not_decompress_either(sim):
    import gzip

    from tests.cloudsim.client import file_path

    set_fault(sim, "truncated_file")
    manifest = get(sim.url, TOKEN, "/v1/exports/latest").json()
    data = get(sim.url, TOKEN, file_path(manifest["export_id"], "residents.ndjson.gz")).content
    assert len(data) < manifest["files"][0]["bytes"]
    with pytest.raises(EOFError):
        gzip.decompress(data)


def test_feed_gap_is_detected(sim):
    requests.post(sim.admin_url + "/admin/changes", json={"events": 5}, headers=ADMIN, timeout=60)
    set_fault(sim, "feed_gap")
    with pytest.raises(FeedBroken, match="expected seq 1, got 2"):
        read_feed(sim.url, TOKEN, sim.public_key, after=0)
    clear_fault(sim, "feed_gap")
    changes = read_feed(sim.url, TOKEN, sim.public_key, after=0)
    assert [c["seq"] for c in changes] == list(range(1, len(changes) + 1))


def test_halved_export_is_signed_but_fails_the_record_count_gate(sim):
    before, _ = read_export(sim.url, TOKEN, sim.public_key)
    set_fault(sim, "halved_export")
    manifest, records = read_export(sim.url, TOKEN, sim.public_key)  # signature and files are fine
    assert manifest["export_id"] != before["export_id"]
    assert 0.4 * RESIDENTS <= len(records["residents"]) <= 0.6 * RESIDENTS
    with pytest.raises(ExportRefused, match="record count dropped"):
        read_export(sim.url, TOKEN, sim.public_key, previous_residents=RESIDENTS)
    clear_fault(sim, "halved_export")
    manifest, records = read_export(sim.url, TOKEN, sim.public_key, previous_residents=RESIDENTS)
    assert len(records["residents"]) >= RESIDENTS


def test_an_unknown_fault_is_refused(sim):
    response = requests.put(f"{sim.admin_url}/admin/faults/meteor", headers=ADMIN, timeout=10)
    assert response.status_code == 404 and response.json()["error"] == "unknown_fault"


def test_the_cli_sets_lists_and_clears_faults(sim):
    def sonae(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fallback.cli", "cloudsim", *args, "--admin-url", sim.admin_url,
                               "--token", TOKEN], capture_output=True, text=True, timeout=60)

    result = sonae("fault", "set", "juki_net_down")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ON  juki_net_down")
    assert get(sim.url, TOKEN, "/v1/health").json()["components"]["juki_net"] == "down"
    listing = sonae("fault", "list").stdout
    assert "ON  juki_net_down" in listing and "off down" in listing
    assert sonae("fault", "clear").returncode == 0
    assert healthy(sim)
    timed = sonae("fault", "set", "batch_stuck", "--seconds", "0.5")  # any fault but slow: how long it lasts
    assert timed.returncode == 0 and "ON  batch_stuck" in timed.stdout and " s more" in timed.stdout
    time.sleep(1.0)
    assert healthy(sim)
    wrong = subprocess.run([sys.executable, "-m", "fallback.cli", "cloudsim", "fault", "list", "--admin-url", sim.admin_url,
                            "--token", "wrong"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr
