"""Benchmarks: they print figures and assert nothing (tests assert behaviour).

benchmark.py's parts live here (load generation, /metrics diffs, statistics, the
scenarios, charts), beside issue 2's ``api_vs_bare`` and the invalidator's own
benchmark.  Nothing here is imported by the API or the invalidator; the package
needs only the ``bench`` extra (httpx, rich, matplotlib) besides the project.
"""
