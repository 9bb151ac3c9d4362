"""Blueprints, one per area of the counter appliance."""
