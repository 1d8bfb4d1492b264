"""Running the `cachetail` command as an operator does: a process of its own, in an empty
folder (no .env), with only the settings a test gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "cachetail.toml"
SHOP = ROOT / "examples" / "shop.toml"
SETTINGS = ("DB_", "REDIS_", "CACHE_", "API_", "ADMIN_", "PROMETHEUS_", "INVALIDATOR_", "CACHETAIL_", "NEARCACHE")


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without any cachetail setting, then ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS)}
    return {**base, **env}


def cachetail(cwd: Path, env: dict[str, str], *args: str, script: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``python -m cachetail_cli ARGS`` (or the installed console script ``script``)."""
    command = [str(Path(sys.executable).parent / script)] if script else [sys.executable, "-m", "cachetail_cli"]
    return subprocess.run([*command, *args], cwd=cwd, env=clean_env(env), capture_output=True, text=True,
                          timeout=60)
