"""cachetail's read API: users and products cache-aside from Redis, MySQL the truth.

Nothing is imported here on purpose: ``python -m api`` must set
PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client.
"""
