"""cachetail invalidator: tails the MySQL binlog and deletes (or refreshes) stale Redis keys.

``python -m invalidator`` / ``invalidator``; see :mod:`invalidator.worker` for the loop.
"""
