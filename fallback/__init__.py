"""Sonae fallback: the counter appliance (Flask app, modes, issuance, audit, worker)."""
