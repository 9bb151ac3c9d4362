"""One seed, one register: byte-identical files however many processes made
them; another seed, another register; a state directory is reused."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import zlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudsim.gzjoin import GzipAssembler, crc32_combine, deflate_lines
from cloudsim.register import Register
from sync.contract import canonical_json
from sync.synthetic.synth import RegisterSpec

# Two chunks of 10,000: the parallel path and the chunk boundary are exercised.
SPEC = RegisterSpec(residents=10_500, seed=99, register_date=dt.date(2026, 11, 24))


def files_of(register: Register) -> tuple[dict, dict[str, bytes]]:
    manifest = register.latest_manifest()
    directory = register.exports_dir / manifest["export_id"]
    return manifest, {entry["name"]: (directory / entry["name"]).read_bytes() for entry in manifest["files"]}


def without_signature(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "signature"}


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    one = Register.open(tmp_path / "one", SPEC, private_key=Ed25519PrivateKey.generate(), workers=2)
    other = Register.open(tmp_path / "other", SPEC, private_key=Ed25519PrivateKey.generate(), workers=1)
    manifest_one, files_one = files_of(one)
    manifest_other, files_other = files_of(other)
    assert files_one == files_other
    assert without_signature(manifest_one) == without_signature(manifest_other)
    assert manifest_one["signature"] != manifest_other["signature"]  # different keys


def test_another_seed_gives_another_register(tmp_path):
    small = RegisterSpec(residents=500, seed=1, register_date=SPEC.register_date)
    key = Ed25519PrivateKey.generate()
    first = files_of(Register.open(tmp_path / "a", small, private_key=key, workers=1))[1]
    second = files_of(Register.open(tmp_path / "b", dataclasses.replace(small, seed=2), private_key=key, workers=1))[1]
    assert first["residents.ndjson.gz"] != second["residents.ndjson.gz"]
    names = [{line.split('"name":')[1][:20] for line in gzip.decompress(f["residents.ndjson.gz"]).decode().splitlines()}
             for f in (first, second)]
    assert len(names[0] & names[1]) < len(names[0]) / 2


def test_a_state_directory_is_reused_and_resigned(tmp_path):
    small = RegisterSpec(residents=300, seed=5, register_date=SPEC.register_date)
    first = Register.open(tmp_path, small, private_key=Ed25519PrivateKey.generate(), workers=1)
    assert not first.reused
    new_key = Ed25519PrivateKey.generate()
    again = Register.open(tmp_path, small, private_key=new_key, workers=1)
    assert again.reused
    assert without_signature(again.latest_manifest()) == without_signature(first.latest_manifest())
    manifest = again.latest_manifest()
    new_key.public_key().verify(base64.b64decode(manifest["signature"]), canonical_json(without_signature(manifest)))
    other_size = Register.open(tmp_path, dataclasses.replace(small, residents=301), private_key=new_key, workers=1)
    assert not other_size.reused and other_size.latest_manifest()["files"][0]["records"] == 301


def test_crc32_of_parts_combines_to_the_crc32_of_the_whole():
    first, second = b"\xe4\xbd\x90\xe8\x97\xa4" * 1000, b"abc" * 77 + b"\x00"
    assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)
    assert crc32_combine(zlib.crc32(first), 0, 0) == zlib.crc32(first)


def test_pieces_make_one_gzip_member(tmp_path):
    lines = [f'{{"n":{n},"name":"佐藤　花子"}}' for n in range(25_000)]
    path = tmp_path / "joined.gz"
    with open(path, "wb") as handle:
        assembler = GzipAssembler(handle)
        for start in range(0, len(lines), 10_000):
            assembler.add(deflate_lines(lines[start:start + 10_000]))
        assembler.add(deflate_lines([]))
        assembler.finish()
    data = path.read_bytes()
    assert gzip.decompress(data).decode().splitlines() == lines
    stream = zlib.decompressobj(wbits=31)
    stream.decompress(data)
    assert stream.eof and stream.unused_data == b""
    assert assembler.lines == len(lines) and assembler.bytes == len(data)
