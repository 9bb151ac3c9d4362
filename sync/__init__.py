"""Sonae sync: mirror the upstream register into verified, encrypted snapshot generations."""
