"""deploy/systemd checked by the real tools: the units pass ``systemd-analyze verify`` and
score at most 2.0 in ``systemd-analyze security --offline``; Python and the project's native
modules run under the units' own seccomp policy (SystemCallFilter, MemoryDenyWriteExecute,
RestrictAddressFamilies), rebuilt here with libseccomp.

A skip happens only where a tool is not installed (Debian package ``systemd``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
import re
import sys
import textwrap
from pathlib import Path

import pytest

from deploy_common import ROOT, UNIT_NAMES, UNITS, run, tool

MAX_EXPOSURE = 2.0


# --------------------------------------------------------------------------- units


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file, in order (keys repeat in unit files)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def runnable_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with /opt/cachetail/.venv/bin/ pointed at this checkout's console scripts.

    verify checks that ExecStart's binary exists and is executable; everything
    else in the files is left as shipped.
    """
    venv_bin = Path(sys.executable).parent
    out = tmp_path_factory.mktemp("units")
    for name in UNIT_NAMES:
        text = (UNITS / name).read_text()
        assert "ExecStart=/opt/cachetail/.venv/bin/" in text, f"{name}: ExecStart outside the documented venv"
        for script in re.findall(r"ExecStart=/opt/cachetail/\.venv/bin/(\S+)", text):
            assert (venv_bin / script).is_file(), f"console script {script} missing from {venv_bin}"
        (out / name).write_text(text.replace("/opt/cachetail/.venv/bin/", f"{venv_bin}/"))
    return out


def test_units_pass_systemd_analyze_verify(runnable_units: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run(analyze, "verify", "--man=no", *(runnable_units / n for n in UNIT_NAMES))
    # verify exits 0 on unknown keys and only warns, so stderr must be empty too.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr + result.stdout


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_exposure_at_most_2(runnable_units: Path, name: str) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run(analyze, "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}",
                 "--no-pager", runnable_units / name)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    exposure = float(found.group(1))
    print(f"{name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_units_carry_the_agreed_settings() -> None:
    api = unit_settings(UNITS / "cachetail-api.service")
    inv = unit_settings(UNITS / "cachetail-invalidator.service")
    for unit in (api, inv):
        assert unit["EnvironmentFile"][0] == "/etc/cachetail/cachetail.env"
        assert unit["Restart"] == ["on-failure"]
        assert unit.get("DynamicUser") == ["yes"] or unit.get("User") == ["cachetail"]
        assert unit["CapabilityBoundingSet"] == [""]
        assert unit["MemoryDenyWriteExecute"] == ["yes"]
        assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
        assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert api["Type"] == ["exec"]
    assert api["ExecStart"] == ["/opt/cachetail/.venv/bin/cachetail-api --workers 2"]
    assert "PROMETHEUS_MULTIPROC_DIR=%t/cachetail-api" in api["Environment"]
    assert api["RuntimeDirectory"] == ["cachetail-api"]
    assert inv["Type"] == ["notify"] and inv["NotifyAccess"] == ["main"]
    assert inv["ExecStart"] == ["/opt/cachetail/.venv/bin/invalidator"]
    assert inv["WatchdogSec"] and inv["StateDirectory"] == ["cachetail-invalidator"]
    assert "INVALIDATOR_STATE_DIR=%S/cachetail-invalidator" in inv["Environment"]


# ------------------------------------------- the units' seccomp policy, rebuilt

# Run as `python SANDBOX <unit file> <program> <args...>`: loads the seccomp
# filter systemd 252 derives from the unit's SystemCallFilter=,
# MemoryDenyWriteExecute= (seccomp-based in this version: no W+X mmap, no
# mprotect to executable, no SHM_EXEC) and RestrictAddressFamilies=, then execs.
SANDBOX = textwrap.dedent(
    """
    import ctypes, errno, os, socket, subprocess, sys

    ALLOW, CMP_EQ, CMP_MASKED_EQ = 0x7FFF0000, 4, 7
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000

    def expand(group, seen):
        out = subprocess.run(["systemd-analyze", "syscall-filter", group],
                             capture_output=True, text=True, check=True).stdout
        names = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if line.startswith("@") and line not in seen:
                seen.add(line)
                names |= expand(line, seen)
            elif line and not line.startswith("#"):
                names.add(line)
        return names

    def names(spec):
        out = set()
        for item in spec.split():
            out |= expand(item, set()) if item.startswith("@") else {item}
        return out

    allowed, families, mdwe = set(), [], False
    for line in open(sys.argv[1]):
        key, _, value = line.strip().partition("=")
        if key == "SystemCallFilter":
            allowed = allowed - names(value[1:]) if value.startswith("~") else allowed | names(value)
        elif key == "RestrictAddressFamilies":
            families = [getattr(socket, f) for f in value.split()]
        elif key == "MemoryDenyWriteExecute":
            mdwe = value == "yes"

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x00050000 | errno.EPERM)   # SystemCallErrorNumber=EPERM

    def rule(name, *cmps):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return   # not a syscall of this architecture
        arr = (Cmp * max(1, len(cmps)))(*cmps)
        rc = lib.seccomp_rule_add_array(ctx, ALLOW, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, "seccomp_rule_add " + name)

    special = {"mmap", "mprotect", "pkey_mprotect", "shmat", "socket"} if mdwe else {"socket"}
    for name in sorted(allowed - special):
        rule(name)
    if mdwe:
        for prot in (0, PROT_WRITE, PROT_EXEC):
            rule("mmap", Cmp(2, CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, prot))
        rule("mprotect", Cmp(2, CMP_MASKED_EQ, PROT_EXEC, 0))
        rule("pkey_mprotect", Cmp(2, CMP_MASKED_EQ, PROT_EXEC, 0))
        rule("shmat", Cmp(2, CMP_MASKED_EQ, SHM_EXEC, 0))
    for family in families:
        rule("socket", Cmp(0, CMP_EQ, family, 0))
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")
    os.execv(sys.argv[2], sys.argv[2:])
    """
)

# What the services load, and the ways Python could need W+X memory.
PROBE = textwrap.dedent(
    """
    import ctypes, mmap, socket, ssl, json
    import uvloop, httptools, hiredis, pymysql, redis, starlette, uvicorn, prometheus_client
    import pymysqlreplication, dotenv, dbutils
    import cachetail.settings, cachetail.keyspace, metrics.api, metrics.invalidator
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(41) == 42
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        wx = "allowed"
    except OSError:
        wx = "denied"
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
        netlink = "allowed"
    except OSError:
        netlink = "denied"
    import asyncio
    uvloop.install()
    asyncio.run(asyncio.sleep(0))
    print(json.dumps({"wx": wx, "netlink": netlink}))
    """
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tool("systemd-analyze", "systemd")
    if platform.machine() != "x86_64" or ctypes.util.find_library("seccomp") is None:
        pytest.skip("the seccomp rebuild needs x86_64 and libseccomp2")
    path = tmp_path_factory.mktemp("sandbox") / "sandbox.py"
    path.write_text(SANDBOX)
    return path


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_python_runs_under_the_units_seccomp_policy(sandbox: Path, name: str) -> None:
    result = run(sys.executable, sandbox, UNITS / name, sys.executable, "-c", PROBE, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    # The filter really is in force: writable+executable memory and netlink are refused.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"wx": "denied", "netlink": "denied"}
