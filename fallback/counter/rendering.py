"""From an issuance plan to the printing package's plain certificate data.

`printing` knows nothing of configuration, snapshots or requests; this is
where the appliance's config and the issued copy's stamp are turned into
what it renders."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from fallback.config import Config
from fallback.counter.issuance import OFFICIAL, Clerk, IssuedCopy, IssueRefused, IssueRequest, Plan, Scope
from fallback.keys import signing_key, signing_key_status
from fallback.ops import now
from printing.model import HOUSEHOLD_KINDS, Certificate, IssueStamp, Municipality, PrintSettings
from printing.pool import RenderPool
from printing.render import RenderedCertificate, render_certificate

# The pool `sonae serve` renders certificates in (render_pool); None: this
# process renders them itself (one process, the CLI, most tests).
_pool: RenderPool | None = None


@lru_cache(maxsize=4)
def _settings(config: Config) -> PrintSettings:
    # Config objects live as long as the app; building these once keeps the
    # era table and the seal image parsed once, not per certificate.
    settings = PrintSettings.from_config_section(config["printing"], font_cache_dir=config.home / "font-cache")
    return dataclasses.replace(settings, verification_url=verification_url(config))


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


def official_seal_problem(config: Config) -> str | None:
    """Why real certificates cannot be issued for want of a 電子公印, or
    None. The standard prints the 電子公印 on every certificate and this
    appliance issues none with 「公印省略」; the check is the same on /readyz,
    the IT dashboard and at the counter."""
    configured = config["printing"]["official_seal_image"]
    if not configured:
        return (
            "電子公印の画像が設定されていません（printing.official_seal_image）。本番の証明書は交付できません"
            "（公印省略の証明書は交付しません）。区の電子公印をPNGで用意し、設定してください"
        )
    path = Path(configured)
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return f"電子公印の画像 {path} がありません（printing.official_seal_image）。本番の証明書は交付できません"
    except (OSError, UnidentifiedImageError):
        return f"電子公印の画像 {path} を画像として読めません（printing.official_seal_image）。本番の証明書は交付できません"
    return None


def print_settings(config: Config) -> PrintSettings:
    return _settings(config)


def issuer_on(config: Config, day: dt.date) -> str:
    """Who certifies on `day`: the mayor, or the 職務代理者 whose configured
    range (municipality.acting_mayors, inclusive dates) covers the day."""
    section = config["municipality"]
    for acting in section["acting_mayors"]:
        if dt.date.fromisoformat(str(acting["from"])) <= day <= dt.date.fromisoformat(str(acting["to"])):
            return acting["name"]
    return section["mayor"]


def municipality(config: Config, day: dt.date | None = None) -> Municipality:
    """The [municipality] section as printing sees it, with the issuer of
    `day` (today when not given)."""
    section = config["municipality"]
    return Municipality.from_config_section({**section, "mayor": issuer_on(config, day or now().date())})


def build_certificate(config: Config, req: IssueRequest, plan: Plan, clerk: Clerk, scope: Scope, *, serial: int,
                      data_as_of: dt.datetime) -> Certificate:
    """The certificate as printing sees it. Building it validates the
    combination (layout, items, seal), so issuance builds one before it
    allocates any serial: a request printing would refuse never costs one.
    A real certificate without a usable 電子公印, or any without a signing
    key that loads, is refused here."""
    if not scope.is_drill:
        problem = official_seal_problem(config)
        if problem:
            raise IssueRefused("official_seal", f"{problem}。証明書は交付されていません。後日交付として受け付け、情報政策課に連絡してください。")
    if signing_key_status(config) is not None:
        raise IssueRefused("signing_key", "証明書に署名する鍵を読み込めません。証明書は交付されていません。"
                                          "後日交付として受け付け、情報政策課に連絡してください（sonae doctor が原因を示します）。")
    issued_at = now()
    stamp = IssueStamp(serial=serial, issued_at=issued_at, data_as_of=data_as_of, municipality=municipality(config, issued_at.date()),
                       terminal=clerk.terminal, printer_id=clerk.printer, drill=scope.is_drill)
    return Certificate(
        kind=req.kind, residents=plan.residents, stamp=stamp, settings=_settings(config),
        layout="kojin" if req.kind in ("johyo", "inkan") else req.layout, seal=plan.seal,
        requested=plan.items, omit_katagaki=req.omit_katagaki and req.kind == "kisai",
        whole_household=req.whole_household and req.kind in HOUSEHOLD_KINDS, official_use=req.requester_type == OFFICIAL,
    )


def render_issued(config: Config, req: IssueRequest, plan: Plan, clerk: Clerk, scope: Scope, copy: IssuedCopy,
                  data_as_of: dt.datetime) -> RenderedCertificate:
    """The copy's certificate, rendered in the pool when one is open.
    printing.pool.RenderProcessLost when the pool lost it twice."""
    certificate = build_certificate(config, req, plan, clerk, scope, serial=copy.serial, data_as_of=data_as_of)
    render = _pool.render if _pool is not None else render_certificate
    return render(certificate, signing_key(config))


def render_processes(config: Config) -> int:
    """How many processes render certificates: web.render_processes, or
    one per core this process may run on."""
    return config["web"]["render_processes"] or len(os.sched_getaffinity(0))


@contextmanager
def render_pool(config: Config, processes: int | None = None) -> Iterator[RenderPool | None]:
    """While open, certificates render in a pool of `processes` (default
    render_processes(config)) warm processes — or in the request threads
    when that is 1. Serials, the audit and every database write stay in
    this process."""
    global _pool
    processes = render_processes(config) if processes is None else processes
    if processes == 1:
        yield None
        return
    pool = RenderPool(processes)
    try:
        # The server listens while the processes start (`sonae serve` on a
        # 4M register answers its first search sooner, README "start-up").
        pool.start_warming()
        _pool = pool
        yield pool
    finally:
        _pool = None
        pool.close()
