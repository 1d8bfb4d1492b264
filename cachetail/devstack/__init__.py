"""Throwaway MariaDB and Redis servers in a folder, for tests and ``make run``.

Both are started from the installed Debian binaries on ports of their own,
listening on 127.0.0.1 only; nothing here touches a server already running on
the standard ports.
"""

from cachetail.devstack.mariadb import BINLOG_ARGS, EXAMPLES_DIR, SQL_DIR, MariaDB, load_example, load_schema
from cachetail.devstack.process import (ROOT, DevStackError, find_binary, free_port, port_in_use, stop_stale,
                                        terminate)
from cachetail.devstack.redis_cluster import RedisCluster
from cachetail.devstack.redis_server import RedisServer

__all__ = ["BINLOG_ARGS", "EXAMPLES_DIR", "ROOT", "SQL_DIR", "DevStackError", "MariaDB", "RedisCluster",
           "RedisServer", "find_binary", "free_port", "load_example", "load_schema", "port_in_use", "stop_stale",
           "terminate"]
