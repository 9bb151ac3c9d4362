"""The public certificate check: whoever holds a certificate can verify its
signed QR code at /verify (and with `sonae verify`).
"""
