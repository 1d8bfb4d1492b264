"""``python -m cachetail``: the ``cachetail`` command (cachetail/cli.py)."""

import sys

from cachetail.cli import main

sys.exit(main())
