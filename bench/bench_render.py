"""Certificate rendering speed, against bare WeasyPrint in the same run.

    .venv/bin/python bench/bench_render.py [--iterations 40]

Cases: a 4-person 世帯連記式 住民票 (all optional items), the same household
with an IVS name (葛󠄂城 辻󠄂, IPAmj glyphs), the same household with the
地紋 (printing.anti_copy_pattern, for plain paper), an 印鑑登録証明書, and the
baseline: WeasyPrint alone rendering the very HTML Sonae hands it for the
plain case (HTML(string=...).write_pdf(), default options). The ratio is
Sonae's render (HTML building, QR signing, rare-glyph lookup, PDF/A output,
page check) over that baseline. Warm means after a few renders in the same
process, with the snapshot's rare-glyph font prepared, as on the appliance.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from weasyprint import HTML  # noqa: E402

from printing.glyphs import prepare_rare_glyph_font  # noqa: E402
from printing.model import OPTIONAL_ITEMS, SPECIMEN_SEAL_IMAGE, Certificate, IssueStamp, Municipality, PrintSettings  # noqa: E402
from printing.render import render_certificate, render_html  # noqa: E402

EXPORT = ROOT / "tests" / "fixtures" / "example-export"
JST = dt.timezone(dt.timedelta(hours=9))
IVS = "\U000E0102"


def records(kind: str) -> list[dict]:
    with gzip.open(EXPORT / f"{kind}.ndjson.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def four_person_household(residents: list[dict]) -> list[dict]:
    members = sorted((r for r in residents if r["household_id"] == "0000100001"), key=lambda r: r["household_order"])
    fourth = copy.deepcopy(members[-1])
    fourth.update(resident_code="20000000001", household_order=4, name="山田　次郎", name_kana="ヤマダ　ジロウ",
                  birth_date="2013-08-08")
    return members + [fourth]


def timed(function, iterations: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds per call. CPU time is what the render costs
    on an idle box; wall time also counts waiting for a busy one."""
    wall, cpu = [], []
    for _ in range(iterations):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-font-cache-") as cache:
        run(args.iterations, args.warmup, Path(cache))


def run(iterations: int, warmup: int, cache: Path) -> None:
    residents = records("residents")
    seals = {seal["resident_code"]: seal for seal in records("seals")}
    household = four_person_household(residents)
    ivs_household = copy.deepcopy(household)
    ivs_household[1]["name"] = f"葛{IVS}城　辻{IVS}"
    key = Ed25519PrivateKey.generate()
    settings = PrintSettings(official_seal_image=SPECIMEN_SEAL_IMAGE, font_cache_dir=cache)  # the synthetic 見本 電子公印
    stamp = IssueStamp(
        serial=123, issued_at=dt.datetime(2026, 11, 25, 10, 30, tzinfo=JST),
        data_as_of=dt.datetime(2026, 11, 24, 23, 0, tzinfo=JST),
        municipality=Municipality("131113", "東京都", "大田区", "大田区長　鈴木　晶雅"),
        terminal="本庁1", printer_id="プリンタ001",
    )
    everything = frozenset(OPTIONAL_ITEMS)
    plain = Certificate("juminhyo", household, stamp, settings, layout="renketsu", requested=everything)
    ivs = Certificate("juminhyo", ivs_household, stamp, settings, layout="renketsu", requested=everything)
    yamada = household[0]
    inkan = Certificate("inkan", [yamada], stamp, settings, layout="kojin", seal=seals[yamada["resident_code"]])
    patterned = dataclasses.replace(plain, settings=dataclasses.replace(settings, anti_copy_pattern=True))

    # What sync/fallback do at snapshot time: one IPAmj subset for every name and address.
    texts = [f"{r['name']}\n{r['address']['town']}" for r in residents] + [ivs_household[1]["name"]]
    started = time.perf_counter()
    prepare_rare_glyph_font(texts, cache)
    prepare_s = time.perf_counter() - started
    # First certificate with a new rare-glyph set: its own font is cut from the prepared one.
    started = time.perf_counter()
    render_certificate(ivs, key)
    first_ivs_s = time.perf_counter() - started

    plain_html = render_html(plain, key)
    cases = {
        "juminhyo renketsu 4 people": lambda: render_certificate(plain, key),
        "juminhyo renketsu 4 people, IVS name": lambda: render_certificate(ivs, key),
        "juminhyo renketsu 4 people, 地紋": lambda: render_certificate(patterned, key),
        "inkan": lambda: render_certificate(inkan, key),
        "bare WeasyPrint, same HTML (baseline)": lambda: HTML(string=plain_html).write_pdf(),
    }
    results = {}
    for name, function in cases.items():
        timed(function, warmup)
        results[name] = timed(function, iterations)

    print(f"rare-glyph font prepared for {len(texts)} texts in {prepare_s * 1000:.0f} ms; "
          f"first IVS certificate (own font cut on first use) {first_ivs_s * 1000:.0f} ms")
    print(f"{'case':40} {'wall p50':>9} {'wall p95':>9} {'cpu p50':>9} {'cpu p95':>9}  ms, {iterations} warm runs")
    for name, (wall, cpu) in results.items():
        figures = [statistics.median(wall), percentile(wall, 0.95), statistics.median(cpu), percentile(cpu, 0.95)]
        print(f"{name:40} " + " ".join(f"{value * 1000:9.1f}" for value in figures))
    sonae, bare = results["juminhyo renketsu 4 people"], results["bare WeasyPrint, same HTML (baseline)"]
    for label, index in (("wall", 0), ("cpu", 1)):
        print(f"ratio Sonae / bare WeasyPrint ({label}): p50 {statistics.median(sonae[index]) / statistics.median(bare[index]):.2f}, "
              f"p95 {percentile(sonae[index], 0.95) / percentile(bare[index], 0.95):.2f}")


if __name__ == "__main__":
    main()
