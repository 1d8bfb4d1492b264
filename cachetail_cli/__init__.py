"""The ``cachetail`` command (:mod:`cachetail_cli.main`): a package of its own, because it
starts the processes (api, invalidator) that the shared core (cachetail) must never import."""
