"""``python -m sum_core.cli`` is the same as ``sum-hq``."""

import sys

from . import main

sys.exit(main())
