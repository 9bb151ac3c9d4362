"""The upstream contract end to end, over real HTTP on loopback."""

from __future__ import annotations

import gzip
import json

import pytest
import requests

from tests.cloudsim.client import AnswerRefused, file_path, get, read_export, read_resident
from tests.cloudsim.conftest import RESIDENTS, TOKEN


@pytest.fixture(scope="module")
def export(sim):
    return read_export(sim.url, TOKEN, sim.public_key)


def test_a_client_reads_and_verifies_the_whole_export(sim, export):
    manifest, records = export
    assert (manifest["contract"], manifest["export_seq"]) == (2, 1)
    assert manifest["municipality"] == {"code": "131113", "prefecture": "東京都", "name": "大田区"}
    assert manifest["last_seq"] == 0 and manifest["as_of"] == "2026-11-24T23:00:00+09:00"
    residents, seals = records["residents"], records["seals"]
    assert len(residents) == RESIDENTS
    codes = [r["resident_code"] for r in residents]
    assert len(set(codes)) == len(codes)
    assert len({s["seal_number"] for s in seals}) == len(seals)
    assert {s["resident_code"] for s in seals} <= set(codes)


def test_health_answers_ok(sim):
    body = get(sim.url, TOKEN, "/v1/health").json()
    assert body["status"] == "ok"
    assert body["components"] == {"register": "ok", "juki_net": "ok", "batch": "done"}
    assert body["as_of"].endswith("+09:00")


def test_a_resident_is_served_as_in_the_export_in_a_signed_look_up(sim, export):
    resident = export[1]["residents"][1234]
    code = resident["resident_code"]
    assert read_resident(sim.url, TOKEN, sim.public_key, code) == resident
    body = get(sim.url, TOKEN, f"/v1/residents/{code}").json()
    assert (body["contract"], body["municipality_code"], body["resident_code"]) == (2, "131113", code)
    assert body["seals"] == [s for s in export[1]["seals"] if s["resident_code"] == code]
    assert body["as_of"].endswith("+09:00")


def test_an_unknown_resident_is_a_signed_null(sim):
    assert read_resident(sim.url, TOKEN, sim.public_key, "99999999999") is None


def test_a_look_up_signed_by_another_key_is_refused_by_the_client(sim, export):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.contract import public_key_to_b64

    other = public_key_to_b64(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(AnswerRefused, match="signature rule"):
        read_resident(sim.url, TOKEN, other, export[1]["residents"][0]["resident_code"])


def test_ranges_are_served(sim, export):
    manifest = export[0]
    entry = manifest["files"][0]
    path = file_path(manifest["export_id"], entry["name"])
    whole = get(sim.url, TOKEN, path).content

    head = get(sim.url, TOKEN, path, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206
    assert head.headers["Content-Range"] == f"bytes 0-99/{entry['bytes']}"
    assert head.content == whole[:100]

    rest = get(sim.url, TOKEN, path, headers={"Range": "bytes=100-"})
    assert rest.status_code == 206 and head.content + rest.content == whole

    tail = get(sim.url, TOKEN, path, headers={"Range": "bytes=-8"})
    assert tail.content == whole[-8:]  # the gzip trailer: CRC-32 and length

    beyond = get(sim.url, TOKEN, path, headers={"Range": f"bytes={entry['bytes']}-"})
    assert beyond.status_code == 416 and beyond.json()["error"] == "range_not_satisfiable"


def test_files_are_single_gzip_streams(sim, export):
    manifest = export[0]
    import zlib

    for entry in manifest["files"]:
        data = get(sim.url, TOKEN, file_path(manifest["export_id"], entry["name"])).content
        stream = zlib.decompressobj(wbits=31)
        stream.decompress(data)
        assert stream.eof and stream.unused_data == b""  # one member, nothing after it


@pytest.mark.parametrize("path", ["/v1/health", "/v1/exports/latest", "/v1/changes?after=0&limit=10",
                                  "/v1/residents/10000000014", "/v1/exports/x/files/residents.ndjson.gz"])
def test_requests_without_the_token_are_refused(sim, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = requests.get(sim.url + path, headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized" and response.json()["message"]


def test_the_admin_port_wants_the_token_too(sim):
    response = requests.get(sim.admin_url + "/admin/status", timeout=10)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("path, status", [
    ("/v1/changes?after=0&limit=10001", 400),
    ("/v1/changes?after=0&limit=0", 400),
    ("/v1/changes?after=-1", 400),
    ("/v1/changes?after=abc", 400),
    ("/v1/exports/no-such-export/files/residents.ndjson.gz", 404),
    ("/v1/nothing-here", 404),
])
def test_errors_are_json(sim, path, status):
    response = get(sim.url, TOKEN, path)
    assert response.status_code == status
    body = response.json()
    assert set(body) >= {"error", "message"} and body["error"] and body["message"]


def test_a_file_not_in_the_manifest_is_not_served(sim, export):
    response = get(sim.url, TOKEN, file_path(export[0]["export_id"], "manifest.json"))
    assert response.status_code == 404 and response.json()["error"] == "file_not_found"


def test_the_largest_page_of_changes_is_allowed_and_signed(sim):
    body = get(sim.url, TOKEN, "/v1/changes", params={"after": 0, "limit": 10_000}).json()
    assert set(body) == {"contract", "municipality_code", "after", "changes", "last_seq", "as_of", "signature"}
    assert (body["contract"], body["municipality_code"], body["after"]) == (2, "131113", 0)


def test_records_keep_the_contract_key_order_of_the_example(sim, export):
    from tests.conftest import example_records

    example = example_records("residents")[0]
    assert list(export[1]["residents"][0]) == list(example)
    seal = export[1]["seals"][0]
    assert list(seal) == list(example_records("seals")[0])


def test_served_bytes_decompress_to_ndjson_lines(sim, export):
    manifest = export[0]
    entry = manifest["files"][1]
    data = get(sim.url, TOKEN, file_path(manifest["export_id"], entry["name"])).content
    first = gzip.decompress(data).split(b"\n", 1)[0]
    assert json.loads(first)["seal_number"]
