"""``cachetail``: one command for the API, the invalidator and checking a declaration.

::

    cachetail check [--config FILE] [--env-file .env] [--offline] [--account api|invalidator] [--json]
    cachetail api [cachetail-api's options]             (the same as cachetail-api)
    cachetail invalidator [invalidator's options]       (the same as invalidator)

``check`` reads the declaration (``--config``, else ``CACHETAIL_CONFIG``, else the repository's
cachetail.toml), checks it as written, then against the database's information_schema with the
``DB_*`` settings of the environment over ``.env`` (as the processes do), and prints the routes,
keys, Redis keys, tables followed and grants it resolves to.  Exit status: 0 valid; 2 not
valid (one line per problem on stderr, each prefixed by the file); 1 not checked, because the
database could not be reached or the environment does not say how (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pymysql

from cachetail import checkreport, checktext, config, grants, schema
from cachetail.keyspace import Keyspace
from cachetail.settings import CacheSettings, MySQLSettings, Reader, SettingsError, database_name, load_environment

PROG = "cachetail"
VALID, NOT_CHECKED, INVALID = 0, 1, 2


class NotChecked(Exception):
    """The declaration could not be checked against the database: one line saying why."""


def _api(argv: Sequence[str]) -> int:
    from api.__main__ import main

    return main(list(argv))


def _invalidator(argv: Sequence[str]) -> int:
    from invalidator.__main__ import main

    return main(list(argv))


DELEGATES: dict[str, Callable[[Sequence[str]], int]] = {"api": _api, "invalidator": _invalidator}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="One command for the read API, the invalidator"
                                                           " and checking what they cache.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="check a declaration and print what it resolves to",
                                description="Check a declaration and print the routes, keys, Redis keys,"
                                            " tables followed and grants it resolves to.",
                                epilog="Exit status: 0 valid; 2 not valid (one line per problem on stderr);"
                                       " 1 not checked (the database unreachable, or no account to reach it).")
    check.add_argument("--config", metavar="FILE", help="the declaration (default: CACHETAIL_CONFIG,"
                                                        " else the repository's cachetail.toml)")
    check.add_argument("--env-file", metavar="FILE", help="dotenv file beneath the environment (default: .env"
                                                          " when there is one)")
    check.add_argument("--offline", action="store_true", help="check the file as written, without the database")
    check.add_argument("--account", choices=("api", "invalidator"), default="api",
                       help="connect as the API (DB_USER, the default) or as the invalidator"
                            " (INVALIDATOR_DB_USER when set)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    commands.add_parser("api", add_help=False, help="run the read API (cachetail-api; its --help for options)")
    commands.add_parser("invalidator", add_help=False,
                        help="run the invalidator (invalidator; its --help for options)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in DELEGATES:  # everything after the command is theirs, --help included
        return DELEGATES[args[0]](args[1:])
    parser = _parser()
    options = parser.parse_args(args)
    if options.env_file is not None and not Path(options.env_file).is_file():
        parser.error(f"--env-file: no such file {options.env_file}")
    env = load_environment(options.env_file if options.env_file is not None else ".env")
    return check(env, options.config, options.offline, options.account, options.json)


def check(env: Mapping[str, str], path: str | None, offline: bool, account: str, as_json: bool) -> int:
    source = path or str(config.config_path(env))
    try:
        declared = config.load(source)
        keyspace = Keyspace(prefix=CacheSettings.from_env(env).key_prefix)
        if offline:
            catalog, target, database = None, None, database_name(Reader(env))
        else:
            catalog, target = _resolve(declared, env, account)
            database = target.database
    except config.ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        if as_json:
            print(json.dumps({"config": exc.source, "valid": False, "errors": exc.errors}, ensure_ascii=False))
        return INVALID
    except (SettingsError, NotChecked) as exc:
        print(f"{PROG} check: not checked: {exc}", file=sys.stderr)
        return NOT_CHECKED
    report = checkreport.build(declared, catalog, keyspace, database, target,
                               grants.accounts(env, database, declared.tables))
    if as_json:
        print(json.dumps({"valid": True, **asdict(report)}, indent=2, ensure_ascii=False))
    else:
        print(checktext.render(report), end="")
    return VALID


def account_env(env: Mapping[str, str], account: str) -> tuple[dict[str, str], str]:
    """The environment with the account to check as in ``DB_USER``/``DB_PASSWORD``, and where it
    came from.  The API's account is ``DB_USER``; the invalidator's is ``INVALIDATOR_DB_USER``
    when set (as invalidator/settings.py reads it).  Each falls back on the other."""
    out = dict(env)
    api_set = bool((env.get("DB_USER") or "").strip())
    inv_set = bool((env.get("INVALIDATOR_DB_USER") or "").strip())
    if inv_set and (account == "invalidator" or not api_set):
        out["DB_USER"] = env["INVALIDATOR_DB_USER"]
        out["DB_PASSWORD"] = env.get("INVALIDATOR_DB_PASSWORD", "")
        return out, "INVALIDATOR_DB_USER"
    return out, "DB_USER"


def _resolve(declared: config.Config, env: Mapping[str, str], account: str
             ) -> tuple[schema.Catalog, checkreport.Target]:
    chosen, source = account_env(env, account)
    try:
        settings = MySQLSettings.from_env(chosen)
    except SettingsError as exc:
        if exc.name == "DB_USER":
            raise NotChecked("no account to connect with: set DB_USER and DB_PASSWORD (or"
                             " INVALIDATOR_DB_USER and INVALIDATOR_DB_PASSWORD), or use --offline") from None
        raise
    target = checkreport.Target(settings.host, settings.port, settings.database, settings.user, source)
    where = f"{settings.host}:{settings.port} as {settings.user} (from {source})"
    secret = settings.password.reveal()
    try:
        kwargs: dict[str, Any] = settings.pymysql_kwargs()
        conn = pymysql.connect(**kwargs)
    except (pymysql.MySQLError, OSError) as exc:
        raise NotChecked(f"cannot connect to MySQL at {where}: {_one_line(exc, secret)}") from None
    try:
        return schema.resolve(declared, conn, settings.database), target
    except (pymysql.MySQLError, OSError) as exc:
        raise NotChecked(f"MySQL at {where} failed while reading information_schema:"
                         f" {_one_line(exc, secret)}") from None
    finally:
        conn.close()


def _one_line(exc: BaseException, secret: str) -> str:
    parts: tuple[object, ...] = exc.args if isinstance(exc, pymysql.MySQLError) and exc.args else (str(exc),)
    text = f"({parts[0]}) {parts[1]}" if len(parts) == 2 else " ".join(str(p) for p in parts)
    text = " ".join(text.split())
    return text.replace(secret, "**********") if secret else text


if __name__ == "__main__":
    sys.exit(main())
