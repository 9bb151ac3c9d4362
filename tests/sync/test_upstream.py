"""The upstream client: every way of not answering becomes
UpstreamUnavailable with a one-line reason, never data."""

from __future__ import annotations

import socket

import pytest

from fallback.mirror.syncing import run_full_sync
from sync.errors import UpstreamUnavailable
from sync.upstream import DirectoryUpstream, HttpUpstream
from tests.sync.conftest import assert_serving, reload_config, run_sonae, sync_runs
from tests.sync.exports import population, write_export
from tests.sync.upstream_server import TOKEN


@pytest.fixture
def client(upstream):
    client = HttpUpstream(upstream.url, TOKEN, timeout=0.5)
    yield client
    client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_answers(client, upstream):
    assert client.health()["status"] == "ok"
    manifest = client.manifest()
    assert manifest["last_seq"] == 1000
    data = b"".join(client.iter_file(manifest["export_id"], "residents.ndjson.gz"))
    assert data == (upstream.export_dir / "residents.ndjson.gz").read_bytes()
    assert client.changes(after=1000, limit=10) == {"changes": [], "last_seq": 1000, "as_of": upstream.as_of}
    assert client.resident("20000000000") is None  # this test server has no resident lookup: a 404 is "unknown"


def test_connection_refused():
    client = HttpUpstream(f"http://127.0.0.1:{_free_port()}", TOKEN, timeout=0.5)
    with pytest.raises(UpstreamUnavailable, match=r"^GET http://127\.0\.0\.1:\d+/v1/health: cannot connect \(connection refused\)$"):
        client.health()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("error5xx", r"/v1/exports/latest: HTTP 503 maintenance: register under maintenance$"),
        ("slow", r"/v1/exports/latest: no answer within 0\.5 s$"),
        ("malformed", r"/v1/exports/latest: the body is not JSON \(HTTP 200\)$"),
    ],
)
def test_faults_are_unavailable_not_data(client, upstream, fault, reason):
    upstream.fault, upstream.slow_seconds = fault, 2.0
    with pytest.raises(UpstreamUnavailable, match=reason):
        client.manifest()


def test_wrong_token_says_what_to_check(upstream):
    client = HttpUpstream(upstream.url, "not-the-token")
    with pytest.raises(UpstreamUnavailable, match=r"HTTP 401 unauthorized: bad token — the upstream refused the token; check upstream.token_file"):
        client.health()


def test_a_body_without_the_contracts_fields_is_unavailable(client, upstream, monkeypatch):
    upstream.as_of = 12345  # not a timestamp string
    with pytest.raises(UpstreamUnavailable, match="the body lacks changes/last_seq/as_of"):
        client.changes(after=1000, limit=10)


def test_a_dropped_download_resumes_with_range(loaded, store, upstream, tmp_path):
    residents, seals = population(5000)  # large enough that the first chunks arrive before the drop
    write_export(upstream.export_dir, residents, seals)
    upstream.fault = "drop_mid_file"
    result = run_full_sync(reload_config())
    assert result.generation == 2 and result.residents == 5000
    ranges = [headers.get("Range") for path, headers in upstream.requests if path.endswith("residents.ndjson.gz")]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert store.verify().ok


def test_full_sync_while_upstream_is_down_keeps_serving(loaded, upstream):
    upstream.stop()
    result = run_sonae("sync", "full")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: GET {upstream.url}/v1/exports/latest: cannot connect (connection refused)"]
    config = reload_config()
    assert_serving(config, 1, 30)
    run = sync_runs(config)[-1]
    assert run["outcome"] == "failed" and "connection refused" in run["error"]


def test_an_export_directory_has_no_api(small_export):
    directory = DirectoryUpstream(small_export)
    for call in (directory.health, lambda: directory.changes(0, 1), lambda: directory.resident("20000000000")):
        with pytest.raises(UpstreamUnavailable, match="an export directory .* has no API"):
            call()
