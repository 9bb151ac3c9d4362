"""After a full load: the IPAmj subset for the rare glyphs residents print
with, prepared by the worker, and what happens when a resident has a
character no font has."""

from __future__ import annotations

import json
import logging
import signal

from fontTools.ttLib import TTFont

from fallback.mirror.syncing import StopRequest, certificate_font_due, prepare_certificate_font, run_full_sync
from fallback.worker import certificate_font_job
from printing.glyphs import UNION_INDEX
from tests.sync.conftest import assert_serving, run_sonae, sync_runs
from tests.sync.exports import make_resident, population, resident_code, write_export

KATSU_IVS = "葛\U000e0102"  # 葛 with the glyph variant the register keeps (U+845B U+E0102)
VENDOR_GAIJI = "\U000f0001"  # a vendor's 外字 in the private use area: no font has it
UNKNOWN_VARIANT = "辻\U000e01ef"  # a variation selector IPAmj明朝 does not define for 辻


def _union(config) -> tuple[set[str], TTFont]:
    cache = config.home / "font-cache"
    index = json.loads((cache / UNION_INDEX).read_text(encoding="utf-8"))
    return set(index["clusters"]), TTFont(cache / index["font"])


def _export_with(tmp_path, changed: dict[int, dict]):
    residents, seals = population(30)
    for i, changes in changed.items():
        residents[i] = make_resident(i, **changes)
    directory = tmp_path / "export"
    write_export(directory, residents, seals)
    return directory


def test_the_worker_prepares_the_font_after_a_load_by_hand(config, store, tmp_path):
    removal = {"reason": "転出", "occurred_on": "2026-10-01", "notified_on": "2026-09-20", "moved_to": "長崎県長崎市𠮷野町1番",
               "moved_to_confirmed": True, "confirmed_on": "2026-10-09"}
    address = {"prefecture": "東京都", "city": "大田区", "town": "羽田一丁目", "banchi": "1番1号", "katagaki": "﨑山荘101"}
    export = _export_with(tmp_path, {
        0: {"name": f"{KATSU_IVS}西\u3000花子"},
        1: {"status": "removed", "removal": removal},
        2: {"address": address},
        4: {"hitto": "渡邊\u3000健"},
    })
    loaded = run_sonae("sync", "full", "--from", str(export))
    assert loaded.returncode == 0, loaded.stderr
    assert not (config.home / "font-cache").exists()  # the load itself does not wait for the font
    assert certificate_font_due(config) == (1, 1)
    # A stopping worker (SIGTERM) does not read the register to its end
    # first: a minute at 4M, past systemd's patience. The font stays due.
    stopping = StopRequest()
    stopping.request(signal.SIGTERM)
    certificate_font_job(config, stopping)
    assert certificate_font_due(config) == (1, 1) and not (config.home / "font-cache").exists()
    certificate_font_job(config, StopRequest())
    assert certificate_font_due(config) is None
    clusters, font = _union(config)
    # 髙 comes from the test population's surname 髙橋; the others from the
    # name, the 転出先 and the 方書 of single residents.
    assert {KATSU_IVS, "髙", "𠮷", "﨑"} <= clusters
    assert "渡" not in clusters and "邊" not in clusters  # JIS X 0208: IPAex prints them
    variation_sequences = {(base, selector) for table in font["cmap"].tables if table.format == 14
                           for selector, mappings in table.uvsDict.items() for base, _glyph in mappings}
    assert (0x845B, 0xE0102) in variation_sequences
    figures = sync_runs(config)[-1]["detail"]["certificate_font"]
    assert figures["rare_glyphs"] == len(clusters) and figures["missing"] == []
    assert certificate_font_due(config) is None and prepare_certificate_font(config) is None  # once per load


def test_the_printed_texts_of_a_resident(config, store, tmp_path):
    removal = {"reason": "転出", "occurred_on": "2026-10-01", "notified_on": "2026-09-20", "moved_to": "長崎県長崎市桜町1番",
               "moved_to_confirmed": False, "confirmed_on": None}
    export = _export_with(tmp_path, {7: {"status": "removed", "removal": removal, "alias": "大山\u3000健", "former_surname": "木村",
                                         "former_surname_furigana": "キムラ", "remarks": "令和3年4月1日　世帯主変更"}})
    run_full_sync(config, export, actor="test")
    with store.open_register() as register:
        texts = dict(register.printed_texts())
    assert len(texts) == 30
    assert texts[resident_code(7)].split("\n") == [
        "小林\u3000太郎", "コバヤシ\u3000タロウ", "コバヤシ\u3000タロウ", "大山\u3000健", "木村", "キムラ", "小林\u3000太郎", "小林\u3000太郎",
        "東京都大田区蒲田五丁目13番", "東京都", "大田区", "蒲田五丁目", "3番8号", "長崎県長崎市桜町1番", "令和3年4月1日　世帯主変更",
    ]


def test_a_character_no_font_has_is_recorded_and_the_load_stands(config, store, tmp_path, caplog):
    export = _export_with(tmp_path, {
        3: {"name": f"{VENDOR_GAIJI}田\u3000太郎"},
        5: {"name": f"{UNKNOWN_VARIANT}\u3000花子", "head_name": f"{UNKNOWN_VARIANT}\u3000花子"},
        6: {"name": f"{KATSU_IVS}西\u3000健"},
    })
    run_full_sync(config, export, actor="test")
    with caplog.at_level(logging.WARNING, logger="sonae.sync"):
        prepare_certificate_font(config)
    assert_serving(config, 1, 30)
    run = sync_runs(config)[-1]
    assert (run["kind"], run["outcome"], run["error"]) == ("full", "ok", None)
    # In the encrypted operational database: which character, and whose record.
    assert run["detail"]["certificate_font"]["missing"] == [
        {"character": "U+8FBB U+E01EF", "residents": [resident_code(5)], "count": 1},
        {"character": "U+F0001", "residents": [resident_code(3)], "count": 1},
    ]
    # The font is still prepared for every other rare glyph.
    clusters, _font = _union(config)
    assert {KATSU_IVS, "髙"} <= clusters and not {VENDOR_GAIJI, UNKNOWN_VARIANT} & clusters
    # The log tells IT to look, without the residents' data.
    [warning] = [r for r in caplog.records if r.name == "sonae.sync"]
    message = warning.getMessage()
    assert "2 character(s) used by 2 resident(s) exist in no certificate font" in message
    for secret in (resident_code(3), resident_code(5), VENDOR_GAIJI, "U+F0001", "8FBB", "辻"):
        assert secret not in message


def test_a_font_that_cannot_be_written_is_recorded_not_retried_every_turn(loaded, caplog):
    (loaded.home / "font-cache").write_text("not a directory")
    with caplog.at_level(logging.ERROR, logger="sonae.sync"):
        figures = prepare_certificate_font(loaded)
    assert figures["error"].startswith(("FileExistsError", "NotADirectoryError"))
    assert sync_runs(loaded)[-1]["detail"]["certificate_font"] == figures
    assert "certificate font for generation 1 not prepared" in caplog.text
    assert certificate_font_due(loaded) is None  # the next full load tries again
