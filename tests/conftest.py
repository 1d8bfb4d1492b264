"""The tests' fixtures come from the plugins of the support package (tests/support/).

Nothing here or there touches the servers on the standard ports: every server a test
meets is a throwaway one on a free port.
"""

pytest_plugins = [
    "support.servers",
    "support.redis_kinds",
    "support.api",
    "support.invalidator",
    "support.replication",
    "support.shop",
]
