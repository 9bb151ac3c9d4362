"""A synthetic register as a signed full export held in memory: the source
the real loader (sync.loader.load_full) reads, as it reads an upstream.

Nothing is written to disk in clear: the files are gzip bytes in memory,
and the loader writes them only into an encrypted generation. The manifest
is signed with a key made for this one export, whose public half the
caller hands to the loader, so the loader's signature check, contract
validation and gates all run as they do for the real upstream.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.contract import CONTRACT_VERSION, sign
from sync.synthetic.synth import encode

FILES = (("residents.ndjson.gz", "residents"), ("seals.ndjson.gz", "seals"))
CHUNK_BYTES = 1 << 20


class MemoryExport:
    """One export of `residents` and `seals` as of `as_of`, for the
    municipality {code, prefecture, name}; `description` is what the loaded
    generation records as its source."""

    def __init__(self, residents: list[dict], seals: list[dict], *, municipality: dict, as_of: str, export_seq: int,
                 description: str):
        self._description = description
        self._files = {name: _gzip_lines(records) for (name, _), records in zip(FILES, (residents, seals))}
        counts = {"residents": len(residents), "seals": len(seals)}
        signing_key = Ed25519PrivateKey.generate()
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        self._manifest = sign({
            "contract": CONTRACT_VERSION,
            "export_seq": export_seq,
            "export_id": f"{as_of}-{export_seq:04d}",
            "municipality": municipality,
            "as_of": as_of,
            "last_seq": 0,
            "files": [{"name": name, "kind": kind, "records": counts[kind], "bytes": len(self._files[name]),
                       "sha256": hashlib.sha256(self._files[name]).hexdigest()} for name, kind in FILES],
        }, signing_key)

    def describe(self) -> str:
        return self._description

    def close(self) -> None:
        pass

    def manifest(self) -> dict:
        return self._manifest

    def iter_file(self, export_id: str, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        data = self._files[name]
        for start in range(0, len(data), chunk_bytes):
            yield data[start:start + chunk_bytes]


def _gzip_lines(records: list[dict]) -> bytes:
    return gzip.compress("".join(encode(record) + "\n" for record in records).encode("utf-8"), mtime=0)
