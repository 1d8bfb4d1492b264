#!/usr/bin/env python3
"""benchmark.py: what the cache really does, client side and server side.

    python benchmark.py              # against a `make run` stack (reads .env)
    python benchmark.py --quick      # every scenario, under 30 s
    python benchmark.py --help       # scenarios, options, output

The work is in the bench/ package (bench/cli.py first).  This file stays small on
purpose: the load generator's worker processes are started with "spawn", which
imports the main module again in each of them.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench.cli import main

    sys.exit(main())
