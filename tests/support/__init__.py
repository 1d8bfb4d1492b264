"""What the tests share: fixtures (plugins that tests/conftest.py loads) and helpers.

Plugins: :mod:`support.servers` (MariaDB and Redis on free ports), :mod:`support.redis_kinds`
(``@pytest.mark.redis_kinds``), :mod:`support.api` (the app in-process or as a process),
:mod:`support.invalidator` (the worker as a process), :mod:`support.replication` (a primary
and its replica), :mod:`support.shop` (the shop example's MariaDB).  Test modules import
helpers from here, never fixtures.
"""
