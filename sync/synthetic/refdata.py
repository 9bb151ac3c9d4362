"""The reference lists the synthetic register is drawn from (sync/synthetic/data/).

Everything here is read once per process and is immutable afterwards, so that
generator workers can share it and every draw from it is reproducible from a
seed.
"""

from __future__ import annotations

import bisect
import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

DATA_DIR = Path(__file__).with_name("data")
# The ward whose 町丁目 list ships with the generator; other municipalities reuse it
# (the register is synthetic, the town names only have to be real somewhere).
DEFAULT_TOWNS_CODE = "131113"

T = TypeVar("T")


class Weighted(Generic[T]):
    """Items with relative weights, drawn with one bisect per draw."""

    def __init__(self, items: Sequence[T], weights: Sequence[float]):
        if not items:
            raise ValueError("a weighted list needs at least one item")
        self.items = tuple(items)
        self.cum_weights = tuple(_accumulate(weights))
        self.total = self.cum_weights[-1]

    def pick(self, rng: random.Random) -> T:
        # What rng.choices does for one item, without its per-call overhead
        # (a million residents make tens of millions of draws).
        return self.items[bisect.bisect(self.cum_weights, rng.random() * self.total)]

    def __len__(self) -> int:
        return len(self.items)


def _accumulate(weights: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


@dataclass(frozen=True)
class Name:
    """One name part: how it is written and how it is read (katakana)."""

    written: str
    reading: str


@dataclass(frozen=True)
class GivenNameEra:
    sex: str
    born_from: int
    born_to: int
    names: Weighted[Name]


@dataclass(frozen=True)
class Place:
    prefecture: str
    city: str
    town: str

    @property
    def text(self) -> str:
        return f"{self.prefecture}{self.city}{self.town}"


@dataclass(frozen=True)
class ForeignNamePart:
    alphabet: str
    reading: str
    kanji: str | None


@dataclass(frozen=True)
class Nationality:
    """How the residents of one 国籍・地域 are named."""

    nationality: str
    country: str
    order: tuple[str, ...]
    optional: frozenset[str]
    parts: dict  # part name -> {sex: tuple[ForeignNamePart, ...]}
    alias_rate: float
    alias_surnames: tuple[Name, ...]
    special_permanent_rate: float
    special_permanent_alias_rate: float

    @property
    def has_kanji(self) -> bool:
        return all(part.kanji for part in self.parts[self.order[0]]["男"])


@dataclass(frozen=True)
class VariantForm:
    form: str
    share: float


class ReferenceData:
    """All lists, loaded from sync/synthetic/data/."""

    def __init__(self) -> None:
        self.surnames = _load_surnames()
        self.given_eras = _load_given_names()
        self.places = _load_places()
        self.nationalities = _load_nationalities()
        self.variants = _load_variants()

    def towns(self, municipality_code: str) -> tuple[str, ...]:
        return residential_towns(municipality_code)

    def given_names(self, sex: str, birth_year: int) -> Weighted[Name]:
        return _given_names_of(self.given_eras, sex, birth_year)

    def nationality(self, name: str) -> Nationality:
        for nationality in self.nationalities.items:
            if nationality.nationality == name:
                return nationality
        raise KeyError(name)


@functools.cache
def reference_data() -> ReferenceData:
    return ReferenceData()


@functools.cache
def _given_names_of(eras: tuple[GivenNameEra, ...], sex: str, birth_year: int) -> Weighted[Name]:
    """The names of the era of `birth_year`; before the first era, the first;
    after the last, the last."""
    of_sex = [era for era in eras if era.sex == sex]
    for era in of_sex:
        if era.born_from <= birth_year <= era.born_to:
            return era.names
    return of_sex[0].names if birth_year < of_sex[0].born_from else of_sex[-1].names


@functools.cache
def residential_towns(municipality_code: str) -> tuple[str, ...]:
    """The 町丁目 people can live in (industrial islands and parks are left
    out). A municipality without its own list gets the default ward's."""
    path = DATA_DIR / f"towns-{municipality_code}.tsv"
    if not path.exists():
        path = DATA_DIR / f"towns-{DEFAULT_TOWNS_CODE}.tsv"
    return tuple(town for town, residential in _rows(path, 2) if residential == "1")


def _rows(path: Path, columns: int) -> list[list[str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != columns:
            raise ValueError(f"{path.name}: expected {columns} columns in {line!r}")
        rows.append(fields)
    return rows


def _rank_weights(count: int) -> list[float]:
    # Name popularity within one era falls off roughly like 1/rank.
    return [1.0 / (rank + 4) for rank in range(count)]


def _load_surnames() -> Weighted[Name]:
    rows = _rows(DATA_DIR / "surnames.tsv", 3)
    return Weighted([Name(written, reading) for written, reading, _ in rows], [float(count) for *_, count in rows])


def _load_given_names() -> tuple[GivenNameEra, ...]:
    grouped: dict[tuple[str, int, int], list[Name]] = {}
    for written, reading, sex, born_from, born_to in _rows(DATA_DIR / "given_names.tsv", 5):
        grouped.setdefault((sex, int(born_from), int(born_to)), []).append(Name(written, reading))
    return tuple(
        GivenNameEra(sex, born_from, born_to, Weighted(names, _rank_weights(len(names))))
        for (sex, born_from, born_to), names in sorted(grouped.items())
    )


def _load_places() -> Weighted[Place]:
    rows = _rows(DATA_DIR / "places.tsv", 4)
    return Weighted([Place(p, c, t) for p, c, t, _ in rows], [float(w) for *_, w in rows])


def _load_variants() -> dict[str, dict[str, tuple[VariantForm, ...]]]:
    variants: dict[str, dict[str, list[VariantForm]]] = {"surname": {}, "given": {}}
    for part, character, form, share in _rows(DATA_DIR / "variants.tsv", 4):
        variants[part].setdefault(character, []).append(VariantForm(form, float(share)))
    return {part: {c: tuple(forms) for c, forms in table.items()} for part, table in variants.items()}


def _name_parts(raw) -> dict[str, tuple[ForeignNamePart, ...]]:
    def parse(entries):
        return tuple(ForeignNamePart(e[0], e[1], e[2] if len(e) > 2 else None) for e in entries)

    if isinstance(raw, dict):
        return {sex: parse(entries) for sex, entries in raw.items()}
    shared = parse(raw)
    return {"男": shared, "女": shared}


def _load_nationalities() -> Weighted[Nationality]:
    entries = json.loads((DATA_DIR / "foreign_names.json").read_text(encoding="utf-8"))["nationalities"]
    by_name = {entry["nationality"]: entry for entry in entries}
    nationalities = []
    for entry in entries:
        names = by_name[entry.get("names_from", entry["nationality"])]
        nationalities.append(
            Nationality(
                nationality=entry["nationality"],
                country=entry["country"],
                order=tuple(names["order"]),
                optional=frozenset(names.get("optional", ())),
                parts={part: _name_parts(raw) for part, raw in names["parts"].items()},
                alias_rate=names.get("alias_rate", 0.0),
                alias_surnames=tuple(Name(w, r) for w, r in names.get("alias_surnames", ())),
                special_permanent_rate=entry.get("special_permanent_rate", 0.0),
                special_permanent_alias_rate=entry.get("special_permanent_alias_rate", 0.0),
            )
        )
    return Weighted(nationalities, [entry["weight"] for entry in entries])
