"""Command-line tools (console scripts and `python -m decollama.tools.<name>`)."""
