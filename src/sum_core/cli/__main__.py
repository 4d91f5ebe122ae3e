"""``python -m sum_core.cli`` is the same as ``sum-hq``."""

from . import run

run()
