"""The 手書き交付台帳: the ledger each counter keeps while no system works
at all (runbook 04). The other half of the paper kit, the blank 交付申請書,
is fallback.residents.forms' request form printed without a resident.

The kit is printed while Sonae still works and kept in a drawer, because on
the day it is needed Sonae may be the thing that is down. Ledger lines carry
pre-printed 整理番号 (office, page, line), so every handwritten entry can be
referred to later when it is typed into the deferred-request worklist. A
ledger printed for a drill carries the 訓練 watermark and 訓練 numbers, so
it can never be mistaken for the real one.
"""

from __future__ import annotations

from fallback import documents
from fallback.config import Config

LEDGER_LINES_PER_PAGE = 14


def offices(config: Config) -> list[str]:
    """The offices with counters, in the order the terminals are listed."""
    return list(dict.fromkeys(t["office"] for t in config["counter"]["terminals"]))


def ledger_number(office: str, page: int, line: int, *, drill: bool) -> str:
    return f"{'訓練-' if drill else ''}{office}-{page:02d}-{line:02d}"


def ledger_pdf(config: Config, *, drill: bool, pages: int = 3) -> bytes:
    """`pages` ledger pages per office."""
    municipality = config["municipality"]
    ledgers = [
        {"office": office, "page": page,
         "numbers": [ledger_number(office, page, line, drill=drill) for line in range(1, LEDGER_LINES_PER_PAGE + 1)]}
        for office in offices(config) for page in range(1, pages + 1)
    ]
    return documents.render_pdf("runbooks/ledger_pdf.html", title="手書き交付台帳", drill=drill,
                                ward=f"{municipality['prefecture']}{municipality['name']}", ledgers=ledgers)
