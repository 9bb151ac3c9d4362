"""printing.pool: a certificate rendered in a pool process is the one
rendered in this process — same text, same pages, same signed codes."""

from __future__ import annotations

import threading
import time

from PIL import ImageChops

from printing.pool import RenderPool
from printing.render import render_certificate
from tests.printing.support import page_images, pdf_text
from tests.printing.test_glyphs import embedded_fonts

KATSURAGI = "10000000053"  # an IVS name: the rare-glyph font is cut in the pool process


def test_a_certificate_from_a_pool_process_is_the_one_rendered_here(residents, certificate, signing_key, tmp_path):
    cert = certificate("juminhyo", [residents[KATSURAGI]])
    here = render_certificate(cert, signing_key)
    pool = RenderPool(1)
    try:
        pooled = pool.render(cert, signing_key)
    finally:
        pool.close()
    assert (pooled.pages, pooled.content_digest, pooled.qr_payloads) == (here.pages, here.content_digest, here.qr_payloads)
    assert pdf_text(pooled.pdf) == pdf_text(here.pdf) and "SonaeRareGlyphs" in embedded_fonts(pooled.pdf)
    for pooled_page, here_page in zip(page_images(pooled.pdf, tmp_path / "pool"), page_images(here.pdf, tmp_path / "here"), strict=True):
        assert ImageChops.difference(pooled_page, here_page).getbbox() is None


def test_renders_waiting_in_an_executor_another_render_replaced_are_not_cancelled(residents, certificate, signing_key):
    # Several counters' renders wait in one executor; one of them finds it
    # broken (a process killed) and replaces it. The executor is marked
    # broken a moment before its waiting renders are failed — each then
    # retries in the fresh one — and cancelling them in that moment gave
    # their clerks a CancelledError. Here the replacing is done while five
    # renders wait: each must still get its certificate.
    cert = certificate("juminhyo", [residents[KATSURAGI]])
    pool = RenderPool(1)
    outcomes: list = []

    def render() -> None:
        try:
            outcomes.append(pool.render(cert, signing_key).pages)
        except BaseException as exc:
            outcomes.append(exc)

    try:
        pool.warm()
        waiting = [threading.Thread(target=render) for _ in range(5)]
        for thread in waiting:
            thread.start()
        time.sleep(0.05)  # all five submitted; one process renders them one by one
        pool._replace(pool._executor)
        for thread in waiting:
            thread.join(timeout=120)
    finally:
        pool.close()
    assert outcomes == [1] * 5
