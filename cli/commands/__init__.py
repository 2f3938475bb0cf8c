"""The `shaman` commands, one module per topic; cli/main.py registers them on the typer app."""
