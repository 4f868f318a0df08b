"""``python -m deployopt`` runs the CLI."""

from deployopt.cli import main

main()
