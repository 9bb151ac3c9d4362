"""Sonae printing: render certificate data to signed PDFs and send them to printers.

Plain data in, no configuration read here (the caller passes its values):

- printing.model    Certificate, IssueStamp, Municipality, PrintSettings
- printing.render   render_certificate(cert, signing_key) -> RenderedCertificate; render_html
- printing.signing  each page's signed QR payload (SignedPage); verify_payload(text, public_key)
- printing.verify   verify_document(data, public_key): codes read back from a PDF or a scan, text compared
- printing.cups     submit / job_state / wait_for_job / printer_status
- printing.glyphs   prepare_rare_glyph_font(texts, cache_dir) at snapshot time
- printing.wareki   format_wareki, format_seireki, format_wareki_datetime, parse_date_input

Submodules are imported directly; this package imports nothing, so reading a
date at the counter does not load WeasyPrint.
"""
