"""One module per ``xtalwatch`` subcommand; see ``xtalwatch.cli``."""
