"""The MySQL grants each cachetail process needs for a declaration, as runnable statements.

The API only reads rows: SELECT on each declared table.  The invalidator reads the binlog
as a replica does (REPLICATION SLAVE), checks binlog settings and positions (REPLICATION
CLIENT), and reads each declared table's columns, and in refresh mode its rows (SELECT).
The accounts are the ones the environment names (``DB_USER``, ``INVALIDATOR_DB_USER``) or,
where it names none, those ``sql/grants.sql`` creates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cachetail.codec import quote_identifier

API_USER = "cachetail_api"
INVALIDATOR_USER = "cachetail_invalidator"
ANY_HOST = "%"  # as sql/grants.sql; narrow it to the application hosts where you can
DEFAULT_SOURCE = "sql/grants.sql"


@dataclass(frozen=True)
class Account:
    role: str  # "api" or "invalidator"
    user: str
    host: str
    source: str  # where the name comes from: an environment variable or sql/grants.sql
    statements: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{string_literal(self.user)}@{string_literal(self.host)}"


def string_literal(text: str) -> str:
    """``text`` as a quoted SQL string (an account name in a GRANT)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _named(env: Mapping[str, str], variable: str, default: str) -> tuple[str, str]:
    found = (env.get(variable) or "").strip()
    return (found, variable) if found else (default, DEFAULT_SOURCE)


def accounts(env: Mapping[str, str], database: str, tables: Sequence[str]) -> tuple[Account, Account]:
    """The API's and the invalidator's accounts with the statements granting what they need."""
    on = [f"{quote_identifier(database)}.{quote_identifier(t)}" for t in tables]
    api_user, api_source = _named(env, "DB_USER", API_USER)
    inv_user, inv_source = _named(env, "INVALIDATOR_DB_USER", INVALIDATOR_USER)
    api_name = f"{string_literal(api_user)}@{string_literal(ANY_HOST)}"
    inv_name = f"{string_literal(inv_user)}@{string_literal(ANY_HOST)}"
    api = Account("api", api_user, ANY_HOST, api_source,
                  tuple(f"GRANT SELECT ON {table} TO {api_name};" for table in on))
    invalidator = Account("invalidator", inv_user, ANY_HOST, inv_source, (
        f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {inv_name};",
        *(f"GRANT SELECT ON {table} TO {inv_name};" for table in on)))
    return api, invalidator
