"""``python -m cachetail_cli``: the ``cachetail`` command (cachetail_cli/main.py)."""

import sys

from cachetail_cli.main import main

sys.exit(main())
