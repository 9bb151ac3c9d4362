"""The paper procedure's forms, printed in advance (runbook 04): blank
交付申請書 for residents to fill in, and the 手書き交付台帳 each counter
keeps while no system works at all.

They are made while Sonae still works and kept in a drawer, because on the
day they are needed Sonae may be the thing that is down. Ledger lines carry
pre-printed 整理番号 (office, page, line), so every handwritten entry can be
referred to later when it is typed into the deferred-request worklist. A
kit printed for a drill carries the 訓練 watermark and 訓練 numbers, so it
can never be mistaken for the real one.
"""

from __future__ import annotations

from fallback import documents
from fallback.config import Config

LEDGER_LINES_PER_PAGE = 14
KINDS_ON_FORM = ("住民票の写し", "住民票記載事項証明書", "除票の写し", "印鑑登録証明書")
ITEMS_ON_FORM = ("本籍・筆頭者", "世帯主・続柄", "住民票コード", "個人番号", "国籍・地域、在留資格等（外国人住民）", "通称（外国人住民）")


def offices(config: Config) -> list[str]:
    """The offices with counters, in the order the terminals are listed."""
    return list(dict.fromkeys(t["office"] for t in config["counter"]["terminals"]))


def ledger_number(office: str, page: int, line: int, *, drill: bool) -> str:
    return f"{'訓練-' if drill else ''}{office}-{page:02d}-{line:02d}"


def paper_kit_pdf(config: Config, *, drill: bool, request_forms: int = 5, ledger_pages: int = 3) -> bytes:
    """Blank request forms, then `ledger_pages` ledger pages per office."""
    municipality = config["municipality"]
    ledgers = [
        {"office": office, "page": page,
         "numbers": [ledger_number(office, page, line, drill=drill) for line in range(1, LEDGER_LINES_PER_PAGE + 1)]}
        for office in offices(config) for page in range(1, ledger_pages + 1)
    ]
    return documents.render_pdf(
        "runbooks/paper_kit_pdf.html", title="紙の手順用の様式", drill=drill,
        ward=f"{municipality['prefecture']}{municipality['name']}", request_forms=range(request_forms),
        kinds=KINDS_ON_FORM, items=ITEMS_ON_FORM, ledgers=ledgers,
    )
