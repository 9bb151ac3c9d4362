"""The counter: search, the issuance rules, certificates from request to PDF
and printer, deferred requests, the counter screens and the JSON API under
/api/v1.
"""
