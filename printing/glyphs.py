"""Rare glyphs: which text needs IPAmj明朝, and small cached subsets of it.

Certificates are set in IPAex明朝. Three kinds of character must come from
IPAmj明朝 instead, the font that defines 行政事務標準文字:

- a base character followed by a variation selector (葛 U+845B U+E0102):
  a font fallback list does NOT honour the selector (Pango takes the base
  from IPAex and drops the selector silently), so such text is wrapped in a
  span whose only font is the IPAmj subset;
- a character IPAex does not have;
- an ideograph outside JIS X 0208 (髙, 﨑 …): the 外字 of older systems, whose
  standard shape is the MJ one.

IPAmj明朝 is 46 MB; as a document face it is slow to load on every render. So
the text of each certificate gets a subset holding only the glyphs it needs,
cached on disk by content. `prepare_rare_glyph_font` builds, ahead of time, one
subset covering every name and address of a snapshot; per-certificate subsets
are then cut from that small font in tens of milliseconds instead of from
IPAmj itself (about a third of a second; still correct, just slower).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

IPAEX_MINCHO = Path("/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf")
IPAMJ_MINCHO = Path("/usr/share/fonts/truetype/ipamj/ipamjm.ttf")

UNION_INDEX = "rare-glyphs-union.json"


class GlyphMissingError(ValueError):
    """A character (or variation sequence) exists in no certificate font; the
    certificate would print the wrong glyph, so it is not printed."""


def is_variation_selector(char: str) -> bool:
    code = ord(char)
    return 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF


def _is_ideograph(char: str) -> bool:
    return unicodedata.name(char, "").startswith("CJK ")


def _in_jis_x_0208(char: str) -> bool:
    # Python's shift_jis codec is exactly JIS X 0201 + JIS X 0208 (no vendor
    # extensions), which is the set older systems could print without 外字.
    try:
        char.encode("shift_jis")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=1)
def _ipaex_codepoints() -> frozenset[int]:
    return frozenset(TTFont(IPAEX_MINCHO, lazy=True).getBestCmap())


@lru_cache(maxsize=1)
def _ipamj_coverage() -> tuple[frozenset[int], frozenset[tuple[int, int]]]:
    font = TTFont(IPAMJ_MINCHO, lazy=True)
    sequences = set()
    for table in font["cmap"].tables:
        if table.format == 14:
            for selector, mappings in table.uvsDict.items():
                sequences.update((base, selector) for base, _glyph in mappings)
    return frozenset(font.getBestCmap()), frozenset(sequences)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _only_common_characters(text: str) -> bool:
    # JIS X 0208 text (no selectors: they are outside it) needs nothing from
    # IPAmj, and IPAex has all of JIS X 0208 but the control characters. The
    # codec runs in C, so the snapshot-wide scan of every name and address
    # skips most text at that speed.
    try:
        text.encode("shift_jis")
    except UnicodeEncodeError:
        return False
    return _CONTROL_CHARACTERS.search(text) is None


def split_glyph_runs(text: str) -> list[tuple[str, bool]]:
    """Split text into (run, needs_ipamj) pieces, keeping each base character
    together with the variation selector after it."""
    if _only_common_characters(text):
        return [(text, False)] if text else []
    runs: list[tuple[str, bool]] = []
    ipaex = _ipaex_codepoints()
    index = 0
    while index < len(text):
        char = text[index]
        cluster = char
        while index + len(cluster) < len(text) and is_variation_selector(text[index + len(cluster)]):
            cluster += text[index + len(cluster)]
        rare = (
            len(cluster) > 1
            or is_variation_selector(char)
            or (ord(char) not in ipaex and not char.isspace())
            or (_is_ideograph(char) and not _in_jis_x_0208(char))
        )
        if runs and runs[-1][1] == rare:
            runs[-1] = (runs[-1][0] + cluster, rare)
        else:
            runs.append((cluster, rare))
        index += len(cluster)
    return runs


def rare_clusters(texts: Iterable[str]) -> frozenset[str]:
    """Every character or variation sequence in `texts` that needs IPAmj明朝."""
    found: set[str] = set()
    for text in texts:
        for run, rare in split_glyph_runs(text):
            if rare:
                found.update(clusters_of(run))
    return frozenset(found)


def clusters_of(run: str) -> list[str]:
    """A run's characters, each with the variation selectors after it."""
    clusters: list[str] = []
    for char in run:
        if clusters and is_variation_selector(char):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def ipamj_has(cluster: str) -> bool:
    """Whether IPAmj明朝 has this character or variation sequence."""
    codepoints, sequences = _ipamj_coverage()
    base = ord(cluster[0])
    return base in codepoints and all((base, ord(selector)) in sequences for selector in cluster[1:])


def _check_ipamj_has(clusters: Iterable[str]) -> None:
    codepoints, sequences = _ipamj_coverage()
    for cluster in sorted(clusters):
        base = ord(cluster[0])
        shown = " ".join(f"U+{ord(c):04X}" for c in cluster)
        if base not in codepoints:
            raise GlyphMissingError(f"「{cluster}」（{shown}）はIPAmj明朝にない文字のため、証明書に正しく印字できません")
        for selector in cluster[1:]:
            if (base, ord(selector)) not in sequences:
                raise GlyphMissingError(f"「{cluster}」（{shown}）の異体字はIPAmj明朝にないため、証明書に正しく印字できません")


def _set_digest(clusters: Iterable[str]) -> str:
    joined = "\n".join(sorted(clusters)).encode("utf-8")
    return hashlib.sha256(joined).hexdigest()[:24]


def _write_subset(source: Path, clusters: Iterable[str], target: Path) -> None:
    options = subset.Options()
    # Keep the format-14 cmap (variation sequences) and the names; layout
    # features are not needed for horizontal text and WeasyPrint drops them.
    options.layout_features = []
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = TTFont(source, lazy=True)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted(clusters)))
    subsetter.subset(font)
    # Written beside the target and renamed so that another process reading
    # the cache never sees half a font.
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(handle)
    try:
        font.save(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class RareGlyphFonts:
    """The cache of IPAmj subsets in one directory."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self._lock = threading.Lock()

    def _union(self) -> tuple[Path, frozenset[str]] | None:
        try:
            index = json.loads((self.cache_dir / UNION_INDEX).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        path = self.cache_dir / index["font"]
        return (path, frozenset(index["clusters"])) if path.exists() else None

    def prepare(self, texts: Iterable[str]) -> Path | None:
        """Build the subset covering every rare glyph in `texts` and make it
        the source of later per-certificate subsets. None when no text needs
        IPAmj明朝."""
        clusters = rare_clusters(texts)
        if not clusters:
            return None
        _check_ipamj_has(clusters)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            target = self.cache_dir / f"rare-glyphs-union-{_set_digest(clusters)}.ttf"
            if not target.exists():
                _write_subset(IPAMJ_MINCHO, clusters, target)
            index = {"font": target.name, "clusters": sorted(clusters)}
            handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(index, out, ensure_ascii=False)
            os.replace(temporary, self.cache_dir / UNION_INDEX)
            # Earlier snapshots' unions are superseded; per-certificate fonts
            # already cut from them stay valid on their own.
            for old in self.cache_dir.glob("rare-glyphs-union-*.ttf"):
                if old != target:
                    old.unlink(missing_ok=True)
        return target

    def font_for(self, clusters: frozenset[str]) -> Path:
        """A font file holding exactly these clusters, built on first use."""
        target = self.cache_dir / f"rare-glyphs-{_set_digest(clusters)}.ttf"
        if target.exists():
            return target
        with self._lock:
            if target.exists():
                return target
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            union = self._union()
            if union is not None and clusters <= union[1]:
                try:
                    _write_subset(union[0], clusters, target)
                    return target
                except FileNotFoundError:
                    pass  # another process replaced the union since we read its index
            _check_ipamj_has(clusters)
            _write_subset(IPAMJ_MINCHO, clusters, target)
        return target


_caches: dict[Path, RareGlyphFonts] = {}
_caches_lock = threading.Lock()


def rare_glyph_fonts(cache_dir: Path | None) -> RareGlyphFonts:
    """The shared cache object for a directory (None: a per-process temporary
    directory, for callers without a state directory such as tests)."""
    with _caches_lock:
        if cache_dir is None:
            cache_dir = _process_cache_dir()
        cache_dir = Path(cache_dir).resolve()
        if cache_dir not in _caches:
            _caches[cache_dir] = RareGlyphFonts(cache_dir)
        return _caches[cache_dir]


@lru_cache(maxsize=1)
def _process_cache_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="sonae-rare-glyphs-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # a server's papers would leave one behind each run
    return directory


def prepare_rare_glyph_font(texts: Iterable[str], cache_dir: str | os.PathLike) -> Path | None:
    """Build (at snapshot time) the IPAmj subset for every name and address
    in `texts`, so certificates printed later cut their own font from it
    quickly. Returns the font path, or None when nothing needs IPAmj明朝.
    Raises GlyphMissingError naming a character no font can print."""
    return rare_glyph_fonts(Path(cache_dir)).prepare(texts)
