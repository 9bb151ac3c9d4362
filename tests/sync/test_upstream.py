"""The upstream client: every way of not answering becomes
UpstreamUnavailable with a one-line reason, never data; signed answers are
verified before they leave it."""

from __future__ import annotations

import json
import socket

import pytest

from fallback.mirror.syncing import run_full_sync
from sync.errors import UpstreamUnavailable
from sync.upstream import DirectoryUpstream
from tests.support import EXAMPLE_CHANGES_PAGE, EXAMPLE_LOOKUP
from tests.sync.conftest import assert_serving, reload_config, run_sonae, sync_runs
from tests.sync.exports import make_resident, make_seal, population, resident_code, write_export
from tests.sync.upstream_server import client as upstream_client


@pytest.fixture
def client(upstream):
    client = upstream_client(upstream.url, timeout=0.5)
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
    page = client.changes(after=1000, limit=10)
    assert (page["contract"], page["after"], page["changes"], page["last_seq"], page["as_of"]) == (2, 1000, [], 1000, upstream.as_of)
    upstream.residents[resident_code(5)], upstream.seals[resident_code(5)] = make_resident(5), [make_seal(5)]
    lookup = client.lookup(resident_code(5))
    assert (lookup.resident, lookup.seals) == (make_resident(5), [make_seal(5)])
    unknown = client.lookup(resident_code(99))  # a signed answer: the upstream does not know the code
    assert (unknown.resident, unknown.seals) == (None, [])


@pytest.mark.parametrize("example", [EXAMPLE_CHANGES_PAGE, EXAMPLE_LOOKUP], ids=["changes page", "look-up"])
def test_the_contracts_signed_examples_verify(client, upstream, example):
    """The client accepts the contract's own examples, as published."""
    body = json.loads(example.read_text(encoding="utf-8"))
    if "after" in body:
        upstream.serve_page = lambda after, limit: body
        assert client.changes(after=body["after"], limit=10)["changes"] == body["changes"]
    else:
        upstream.serve_lookup = lambda code: body
        assert client.lookup(body["resident_code"]).resident == body["resident"]


def test_connection_refused():
    client = upstream_client(f"http://127.0.0.1:{_free_port()}", timeout=0.5)
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
    client = upstream_client(upstream.url, "not-the-token")
    with pytest.raises(UpstreamUnavailable, match=r"HTTP 401 unauthorized: bad token — the upstream refused the token; check upstream.token_file"):
        client.health()


def test_a_signed_body_without_the_contracts_fields_is_unavailable(client, upstream):
    upstream.as_of = 12345  # not a timestamp string, in a correctly signed page
    with pytest.raises(UpstreamUnavailable, match=r"the body is not what the contract describes \(change-feed page.as_of: 12345 is not"):
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


@pytest.mark.parametrize("kind", ["full", "changes"])
def test_a_sync_while_upstream_is_down_keeps_serving_and_says_what_next(loaded, upstream, kind):
    upstream.stop()
    result = run_sonae("sync", kind)
    assert result.returncode == 1
    path = {"full": "exports/latest", "changes": "changes"}[kind]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: GET {upstream.url}/v1/{path}") and "cannot connect (connection refused); " in line, line
    assert line.endswith("; generation 1 keeps serving, and the worker retries on its own every sync.changes_interval_s — "
                         "rerun by hand once the upstream answers (the IT dashboard shows when it does)"), line
    config = reload_config()
    assert_serving(config, 1, 30)
    run = sync_runs(config)[-1]
    assert run["outcome"] == "failed" and "connection refused" in run["error"]


def test_an_export_directory_has_no_api(small_export):
    directory = DirectoryUpstream(small_export)
    for call in (directory.health, lambda: directory.changes(0, 1), lambda: directory.lookup("20000000000")):
        with pytest.raises(UpstreamUnavailable, match="an export directory .* has no API"):
            call()
