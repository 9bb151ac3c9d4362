"""CLI faces of the appliance areas, one module per `sonae` subcommand group."""
