"""Settings shared by the API and the invalidator.

Each process builds one frozen dataclass from a mapping (``os.environ`` merged
with ``.env``).  A missing or malformed value raises :class:`SettingsError`
naming the variable and what it expects; the entry points print that one line
and exit.  Secrets are wrapped in :class:`Secret`, whose repr never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeAlias, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A configuration variable is missing or malformed."""

    def __init__(self, name: str, expected: str, got: str | None = None) -> None:
        self.name = name
        self.expected = expected
        shown = "" if got is None else f" (got {got!r})"
        super().__init__(f"{name}: expected {expected}{shown}")


class Secret:
    """A string that never shows itself in a repr, str or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def load_environment(env_file: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """``os.environ`` over the values of ``.env`` (the environment wins, as in dotenv)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


# Reader's methods are named after the types they return, which shadows those
# names inside its body; the annotations there use these aliases.
_Str: TypeAlias = str
_Bool: TypeAlias = bool
_Int: TypeAlias = int
_Float: TypeAlias = float


class Reader:
    """Typed, named access to a mapping of strings; every error names its variable."""

    def __init__(self, env: Mapping[_Str, _Str]) -> None:
        self._env = env

    @property
    def env(self) -> Mapping[_Str, _Str]:
        """The mapping read, for a check no typed reading expresses."""
        return self._env

    def _raw(self, name: _Str, default: _Str | None) -> _Str:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            if default is None:
                raise SettingsError(name, "a value (it is required)")
            return default
        return value.strip()

    def str(self, name: _Str, default: _Str | None = None, *, max_len: _Int = 255) -> _Str:
        value = self._raw(name, default)
        if len(value) > max_len or any(ord(c) < 32 for c in value):
            raise SettingsError(name, f"printable text of at most {max_len} characters")
        return value

    def secret(self, name: _Str, default: _Str | None = "") -> Secret:
        value = self._env.get(name)
        if value is None or value == "":
            if default is None:
                raise SettingsError(name, "a value (it is required)")
            return Secret(default)
        if "\n" in value or "\r" in value:
            raise SettingsError(name, "a single-line secret")
        return Secret(value)

    def int(self, name: _Str, default: _Int | None = None, *, lo: _Int, hi: _Int) -> _Int:
        raw = self._raw(name, None if default is None else str(default))
        try:
            value = int(raw, 10)
        except ValueError:
            raise SettingsError(name, f"an integer from {lo} to {hi}", raw) from None
        if not lo <= value <= hi:
            raise SettingsError(name, f"an integer from {lo} to {hi}", raw)
        return value

    def float(self, name: _Str, default: _Float | None = None, *, lo: _Float, hi: _Float) -> _Float:
        raw = self._raw(name, None if default is None else repr(default))
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(name, f"a number from {lo} to {hi}", raw) from None
        if not lo <= value <= hi:
            raise SettingsError(name, f"a number from {lo} to {hi}", raw)
        return value

    def bool(self, name: _Str, default: _Bool) -> _Bool:
        raw = self._raw(name, "true" if default else "false").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(name, "true or false", raw)

    def choice(self, name: _Str, default: _Str, choices: tuple[_Str, ...]) -> _Str:
        raw = self._raw(name, default).lower()
        if raw not in choices:
            raise SettingsError(name, "one of " + ", ".join(choices), raw)
        return raw

    def path(self, name: _Str, *, must_exist: _Bool = True) -> _Str | None:
        raw = self._env.get(name, "").strip()
        if not raw:
            return None
        if must_exist and not Path(raw).is_file():
            raise SettingsError(name, "the path of a readable file", raw)
        return raw

    def parsed(self, name: _Str, default: _Str, parse: Callable[[_Str], T], expected: _Str) -> T:
        raw = self._raw(name, default)
        try:
            return parse(raw)
        except ValueError:
            raise SettingsError(name, expected, raw) from None


class FromEnv:
    """Settings read from an environment: :meth:`from_env` hands :meth:`read` a :class:`Reader`
    of it, so every error names its variable."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls.read(Reader(env))

    @classmethod
    def read(cls, r: Reader) -> Self:
        raise NotImplementedError


def database_name(r: Reader) -> str:
    """``DB_NAME``: the database every table is in (no quoting ever needed)."""
    database = r.str("DB_NAME", "cachelab", max_len=64)
    if not database.replace("_", "").isalnum():
        raise SettingsError("DB_NAME", "letters, digits and underscores", database)
    return database


@dataclass(frozen=True)
class Server:
    """Where a server listens (``DB_HOST``/``DB_PORT``, ``REDIS_HOST``/``REDIS_PORT``)."""

    host: str
    port: int

    def address(self) -> dict[str, object]:
        """The keyword arguments every client library names alike."""
        return {"host": self.host, "port": self.port}


@dataclass(frozen=True)
class MySQLSettings(Server, FromEnv):
    user: str
    password: Secret = field(repr=False)
    database: str
    ssl_ca: str | None
    connect_timeout_s: float
    read_timeout_s: float

    @classmethod
    def read(cls, r: Reader) -> MySQLSettings:
        database = database_name(r)
        return cls(
            host=r.str("DB_HOST", "127.0.0.1"),
            port=r.int("DB_PORT", 3306, lo=1, hi=65535),
            user=r.str("DB_USER", None, max_len=80),
            password=r.secret("DB_PASSWORD", ""),
            database=database,
            ssl_ca=r.path("DB_SSL_CA"),
            connect_timeout_s=r.float("DB_CONNECT_TIMEOUT_S", 3.0, lo=0.1, hi=60),
            read_timeout_s=r.float("DB_READ_TIMEOUT_S", 10.0, lo=0.1, hi=600),
        )

    def pymysql_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``pymysql.connect`` (the password revealed only here)."""
        kwargs: dict[str, object] = {
            **self.address(),
            "user": self.user,
            "password": self.password.reveal(),
            "database": self.database,
            "charset": "utf8mb4",
            "connect_timeout": self.connect_timeout_s,
            "read_timeout": self.read_timeout_s,
            "write_timeout": self.read_timeout_s,
            "autocommit": True,
            # TIMESTAMP columns come back in UTC, as the binlog carries them.
            "init_command": "SET time_zone = '+00:00'",
        }
        if self.ssl_ca:
            kwargs["ssl"] = {"ca": self.ssl_ca}
        return kwargs


@dataclass(frozen=True)
class RedisSettings(Server, FromEnv):
    password: Secret = field(repr=False)
    username: str | None
    tls: bool
    db: int
    socket_timeout_s: float
    max_connections: int
    cluster: bool = False  # REDIS_HOST:REDIS_PORT is a cluster node (or configuration endpoint)
    # Opening a pooled connection, once per connection: under a burst the event loop
    # may be busy for longer than one command's timeout, and a connect timed out
    # trips the API's breaker.
    connect_timeout_s: float = 1.0

    @classmethod
    def read(cls, r: Reader) -> RedisSettings:
        username = r.env.get("REDIS_USERNAME", "").strip() or None
        cluster = r.bool("REDIS_CLUSTER", False)
        if cluster and r.int("REDIS_DB", 0, lo=0, hi=15) != 0:
            raise SettingsError("REDIS_DB", "0 with REDIS_CLUSTER=1 (a cluster has only database 0)")
        return cls(
            host=r.str("REDIS_HOST", "127.0.0.1"),
            port=r.int("REDIS_PORT", 6379, lo=1, hi=65535),
            password=r.secret("REDIS_PASSWORD", ""),
            username=username,
            tls=r.bool("REDIS_TLS", False),
            db=r.int("REDIS_DB", 0, lo=0, hi=15),
            socket_timeout_s=r.float("REDIS_TIMEOUT_S", 0.25, lo=0.01, hi=30),
            max_connections=r.int("REDIS_MAX_CONNECTIONS", 64, lo=1, hi=10_000),
            cluster=cluster,
            connect_timeout_s=r.float("REDIS_CONNECT_TIMEOUT_S", 1.0, lo=0.01, hi=30),
        )

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for redis-py's connection classes (and its cluster clients)."""
        kwargs: dict[str, object] = {**self.address(), "socket_timeout": self.socket_timeout_s,
                                     "socket_connect_timeout": self.connect_timeout_s}
        if not self.cluster:
            kwargs["db"] = self.db
        if self.password:
            kwargs["password"] = self.password.reveal()
        if self.username:
            kwargs["username"] = self.username
        return kwargs


MOVED_TO_CONFIG = {"CACHE_TTL_USER_S": "entities.user.ttl_s", "CACHE_TTL_PRODUCTS_S": "lists.products.ttl_s",
                   "CACHE_TTL_NEGATIVE_S": "entities.user.negative_ttl_s"}


@dataclass(frozen=True)
class CacheSettings(FromEnv):
    lease_ms: int
    lease_wait_ms: int
    key_prefix: str

    @classmethod
    def read(cls, r: Reader) -> CacheSettings:
        prefix = r.str("CACHE_KEY_PREFIX", "ct", max_len=32)
        if not all(c.isalnum() or c in "-_." for c in prefix):
            raise SettingsError("CACHE_KEY_PREFIX", "letters, digits, '-', '_' or '.'", prefix)
        for name, moved in MOVED_TO_CONFIG.items():
            if (r.env.get(name) or "").strip():
                raise SettingsError(name, f"nothing: TTLs are declared in cachetail.toml now ({moved})")
        return cls(
            lease_ms=r.int("CACHE_LEASE_MS", 2000, lo=10, hi=60_000),
            lease_wait_ms=r.int("CACHE_LEASE_WAIT_MS", 200, lo=0, hi=10_000),
            key_prefix=prefix,
        )
