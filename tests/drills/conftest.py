"""Drill, runbook, recovery and incident tests run against the same real
appliance as the counter tests (tests/conftest.py: example register, one
account per role)."""
