"""``python -m deployopt`` runs the CLI (supervised: see :mod:`deployopt.supervise`)."""

from deployopt.supervise import entry

entry()
