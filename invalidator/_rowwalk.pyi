# The compiled row walk (_rowwalk.c); invalidator/fastrows.py builds its plans.

# how a column's value is written (Plan's columns: kind)
SKIP: int
INT: int
UTF8: int
TIMESTAMP2: int
DATETIME2: int
DATE: int
# Plan.apply's operation
INSERT: int
UPDATE: int
DELETE: int

class Plan:
    def __init__(self, columns: tuple[tuple[int, int, int, int, bool], ...], key: int, key_prefix: str,
                 key_suffix: str, delete_op: bytes, served: tuple[tuple[int, bytes], ...],
                 write_prefix: bytes | None) -> None: ...
    def apply(self, data: bytes, start: int, end: int, operation: int, ops: dict[str, bytes], /) -> bool: ...
