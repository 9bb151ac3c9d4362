"""The 交付申請書 (request form for 住民票の写し, 印鑑登録証明書 and the
like), printed with the resident's name, address and birth date already
filled in from the copy — the help Caora gives at the counter, still there
when Caora's upstream is down — or blank, for the paper-only scenario.

The layout is a template: the built-in forms/request_form.html, or the
ward's own file named by [forms] template. A ward's template receives:

  title, addressee           the form's title and 「（あて先）○○区長」
  applicant                  None for a blank form, else a dict with name,
                             name_kana, name_alphabet, alias, address,
                             birth_date (as the certificate prints it),
                             foreign (bool)
  application_date           the date printed in 申請日 ("" when blank)
  kinds, optional_items,     the choices to tick (issuance.KINDS …)
  identity_documents
  data_as_of, printed_at     as 和暦 text ("" when not applicable)
  drill                      True: mark the sheet as training
"""

from __future__ import annotations

import datetime as dt

from fallback.config import Config
from fallback.counter.issuance import IDENTITY_DOCUMENTS, KINDS, OPTIONAL_ITEMS
from fallback.errors import Forbidden
from fallback.paper import html_to_pdf, render_html, template_from_file
from fallback.residents.notice import time_text
from printing.wareki import eras_from_config, format_seireki, format_wareki

BUILT_IN_TEMPLATE = "forms/request_form.html"


class FormRefused(Forbidden):
    """A pre-filled form that must not be printed; the message says what to
    do instead, for the clerk."""

    template = "forms/refused.html"


def applicant_fields(resident: dict, config: Config) -> dict:
    """What the form shows about the resident: no more than Caora would
    read from the card (name, address, birth date)."""
    eras = eras_from_config(config["printing"]["eras"])
    birth = dt.date.fromisoformat(resident["birth_date"])
    address = resident["address"]
    line = f"{address['prefecture']}{address['city']}{address['town']}{address['banchi']}"
    if address.get("katagaki"):
        line += f"　{address['katagaki']}"
    foreign = bool(resident.get("foreign"))
    return {
        "name": resident["name"],
        "name_kana": resident.get("name_kana") or "",
        "name_alphabet": resident.get("name_alphabet") or "",
        "alias": resident.get("alias") or "",
        "address": line,
        # Foreign residents' dates print in the Gregorian calendar, as on
        # their certificates.
        "birth_date": format_seireki(birth) if foreign else format_wareki(birth, eras),
        "foreign": foreign,
    }


def check_prefill_allowed(resident: dict, *, household_protected: bool = False) -> None:
    """A support-measure (DV等) resident's address is never put on paper
    for whoever stands at the counter — nor their household's, which is the
    same address: the clerk uses a blank form."""
    if resident.get("support_measure"):
        raise FormRefused("支援措置（DV等）の対象者のため、記入済みの申請書は印刷できません。白紙の申請書に記入していただいてください。")
    if household_protected:
        raise FormRefused("世帯に支援措置（DV等）の対象者がいるため、記入済みの申請書は印刷できません。白紙の申請書に記入していただいてください。")


def request_form_pdf(config: Config, resident: dict | None, *, printed_at: dt.datetime,
                     data_as_of: dt.datetime | None = None, drill: bool = False, household_protected: bool = False) -> bytes:
    """The form as PDF: pre-filled for `resident`, or blank when None."""
    if resident is not None:
        check_prefill_allowed(resident, household_protected=household_protected)
    eras = eras_from_config(config["printing"]["eras"])
    forms = config["forms"]
    template = template_from_file(forms["template"]) if forms["template"] else BUILT_IN_TEMPLATE
    html = render_html(
        template,
        title=forms["title"],
        addressee=f"{config['municipality']['name']}長",
        applicant=applicant_fields(resident, config) if resident is not None else None,
        application_date=format_wareki(printed_at.date(), eras) if resident is not None else "",
        kinds=KINDS,
        optional_items=OPTIONAL_ITEMS,
        identity_documents=IDENTITY_DOCUMENTS,
        data_as_of=time_text(data_as_of, "ja", config) if resident is not None and data_as_of else "",
        printed_at=time_text(printed_at, "ja", config),
        drill=drill,
    )
    return html_to_pdf(html)
