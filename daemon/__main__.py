"""``python -m daemon`` runs the CLI."""

from daemon.cli import main

main()
