"""One gzip stream built from pieces compressed in parallel (as pigz does).

Each piece is raw deflate data ended with a sync flush, so pieces can be
concatenated in order; the stream then gets one final empty block and the
gzip trailer, whose CRC-32 is combined from the pieces' CRCs. The result is a
single-member gzip file that every reader accepts, and its bytes depend only
on the input lines, not on how many processes compressed them.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

COMPRESSION_LEVEL = 1  # fast: exports of a million residents are written nightly
# Fixed header: no file name, modification time 0 (so the bytes are
# reproducible), operating system "unknown".
GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255])
FINAL_EMPTY_BLOCK = b"\x03\x00"
_BATCH_CHARS = 1 << 20


@dataclass(frozen=True)
class Piece:
    deflated: bytes
    crc: int
    length: int  # uncompressed bytes
    lines: int


def deflate_lines(lines: Iterable[str]) -> Piece:
    """Compress NDJSON lines (without newlines) into one piece."""
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -15)
    out, batch, batch_chars = [], [], 0
    crc = length = count = 0
    for line in lines:
        batch.append(line)
        batch_chars += len(line)
        count += 1
        if batch_chars >= _BATCH_CHARS:
            crc, length = _feed(compressor, batch, out, crc, length)
            batch, batch_chars = [], 0
    crc, length = _feed(compressor, batch, out, crc, length)
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return Piece(b"".join(out), crc, length, count)


def _feed(compressor, batch: list[str], out: list[bytes], crc: int, length: int) -> tuple[int, int]:
    if not batch:
        return crc, length
    data = ("\n".join(batch) + "\n").encode("utf-8")
    out.append(compressor.compress(data))
    return zlib.crc32(data, crc), length + len(data)


class GzipAssembler:
    """Writes pieces, in order, as one gzip stream and keeps its SHA-256."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.lines = 0
        self.crc = 0
        self.length = 0
        self._write(GZIP_HEADER)

    def add(self, piece: Piece) -> None:
        self._write(piece.deflated)
        self.crc = crc32_combine(self.crc, piece.crc, piece.length)
        self.length += piece.length
        self.lines += piece.lines

    def finish(self) -> None:
        self._write(FINAL_EMPTY_BLOCK)
        self._write(self.crc.to_bytes(4, "little") + (self.length & 0xFFFFFFFF).to_bytes(4, "little"))

    def _write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha256.update(data)
        self.bytes += len(data)


# --- CRC-32 of a concatenation, from the CRCs of its parts (zlib's crc32_combine)

def _gf2_times(matrix: list[int], vector: int) -> int:
    total, index = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[index]
        vector >>= 1
        index += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A+B given crc32(A), crc32(B) and len(B)."""
    if length2 == 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2
