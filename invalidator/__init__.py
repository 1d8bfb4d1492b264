"""cachetail invalidator: tails the MySQL binlog and deletes (or refreshes) stale Redis keys.

``python -m invalidator`` / ``invalidator``.  Where to start reading:

- :mod:`invalidator.worker`: lead or stand by, and the parts a leader is made of;
- :mod:`invalidator.follow`: the loop over one binlog stream, and a row's path through it;
- :mod:`invalidator.decode` / :mod:`invalidator.fastrows`: a rows event -> ops in a batch;
- :mod:`invalidator.apply`: the op format (the only place that knows it);
- :mod:`invalidator.sending` / :mod:`invalidator.applier`: a batch -> Redis, acknowledged;
- :mod:`invalidator.progress` / :mod:`invalidator.recovery`: positions, replays, failures.
"""
