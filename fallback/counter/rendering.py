"""From an issuance plan to the printing package's plain certificate data.

`printing` knows nothing of configuration, snapshots or requests; this is
where the appliance's config and the issued copy's stamp are turned into
what it renders."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

from fallback.config import Config
from fallback.counter.issuance import Clerk, IssuedCopy, IssueRequest, Plan, Scope
from fallback.keys import signing_key
from fallback.ops import now
from printing.model import Certificate, IssueStamp, Municipality, PrintSettings
from printing.render import RenderedCertificate, render_certificate


@lru_cache(maxsize=4)
def _settings(config: Config) -> tuple[PrintSettings, Municipality]:
    # Config objects live as long as the app; building these once keeps the
    # era table and the seal image parsed once, not per certificate.
    settings = PrintSettings.from_config_section(config["printing"], font_cache_dir=config.home / "font-cache")
    settings = dataclasses.replace(settings, verification_url=verification_url(config))
    return settings, Municipality.from_config_section(config["municipality"])


def verification_url(config: Config) -> str:
    """The public check's address printed on every certificate."""
    return config["web"]["public_base_url"].rstrip("/") + "/verify"


def verification_address_problem(config: Config) -> str | None:
    """Why the printed verification address reaches no one else, or None.
    The shipped default (loopback) is fine for the demo, not for a ward."""
    host = urlsplit(config["web"]["public_base_url"]).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if not host or loopback:
        return (
            f"web.public_base_url が設定されていません（{config['web']['public_base_url'] or '空'}）。"
            "証明書に印字される確認先がこの装置の中を指し、提出先から確認できません"
        )
    return None


def print_settings(config: Config) -> PrintSettings:
    return _settings(config)[0]


def municipality(config: Config) -> Municipality:
    return _settings(config)[1]


def build_certificate(config: Config, req: IssueRequest, plan: Plan, clerk: Clerk, scope: Scope, *, serial: int,
                      data_as_of: dt.datetime) -> Certificate:
    """The certificate as printing sees it. Building it validates the
    combination (layout, items, seal), so issuance builds one before it
    allocates any serial: a request printing would refuse never costs one."""
    settings, town = _settings(config)
    stamp = IssueStamp(serial=serial, issued_at=now(), data_as_of=data_as_of, municipality=town,
                       terminal=clerk.terminal, printer_id=clerk.printer, drill=scope.is_drill)
    return Certificate(
        kind=req.kind, residents=plan.residents, stamp=stamp, settings=settings,
        layout="kojin" if req.kind in ("johyo", "inkan") else req.layout, seal=plan.seal,
        requested=frozenset(req.items), omit_katagaki=req.omit_katagaki and req.kind == "kisai",
    )


def render_issued(config: Config, req: IssueRequest, plan: Plan, clerk: Clerk, scope: Scope, copy: IssuedCopy,
                  data_as_of: dt.datetime) -> RenderedCertificate:
    certificate = build_certificate(config, req, plan, clerk, scope, serial=copy.serial, data_as_of=data_as_of)
    return render_certificate(certificate, signing_key(config))
