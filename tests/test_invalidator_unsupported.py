"""What would break silently on MySQL 8 (and MariaDB with log_bin_compress): refused, never skipped.

- The server's settings, as data: each one that makes the server write what the worker
  cannot read is refused at start (and on every new server) with a line naming it.
- MySQL's binary JSON in a followed table, in refresh mode.
"""

from __future__ import annotations

import pytest

from cachetail.codec_columns import Column
from invalidator.checks import CheckFailed, binlog_problems, check_binlog, json_problems

GOOD = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
WHERE = "in my.cnf, or on RDS/Aurora in the DB parameter group (then reboot the instance)"


# ------------------------------------------------------------------ settings, as data

@pytest.mark.parametrize(("variables", "line"), [
    ({"binlog_transaction_compression": "ON"},
     f"binlog_transaction_compression is ON, expected OFF: set binlog_transaction_compression=OFF {WHERE}"),
    ({"binlog_row_value_options": "PARTIAL_JSON"},
     f"binlog_row_value_options is PARTIAL_JSON, expected '': set binlog_row_value_options='' {WHERE}"),
    ({"log_bin_compress": "ON"}, f"log_bin_compress is ON, expected OFF: set log_bin_compress=OFF {WHERE}"),
    ({"log_bin_compress": "1"}, f"log_bin_compress is ON, expected OFF: set log_bin_compress=OFF {WHERE}"),
])
def test_each_setting_the_worker_cannot_follow_is_refused_with_its_line(variables: dict[str, str],
                                                                         line: str) -> None:
    with pytest.raises(CheckFailed) as err:
        check_binlog({**GOOD, **variables})
    assert str(err.value) == line


def test_settings_that_are_fine_pass_and_several_problems_are_a_line_each() -> None:
    check_binlog(GOOD)  # MariaDB: neither MySQL variable exists
    check_binlog({**GOOD, "binlog_transaction_compression": "OFF", "binlog_row_value_options": "",
                  "log_bin_compress": "OFF"})  # MySQL 8's defaults, and MariaDB's
    problems = binlog_problems({**GOOD, "binlog_row_image": "MINIMAL", "binlog_transaction_compression": "ON",
                                "binlog_row_value_options": "PARTIAL_JSON"})
    assert [p.split(" is ")[0] for p in problems] == [
        "binlog_row_image", "binlog_transaction_compression", "binlog_row_value_options"]


def column(name: str, data_type: str) -> Column:
    return Column(name=name, data_type=data_type, column_type=data_type, nullable=True, charset=None,
                  collation=None, char_length=None, precision=None, scale=None, fsp=None, position=1)


def test_mysql_json_in_a_followed_table_is_refused_in_refresh_mode_only() -> None:
    columns = {"users": [column("id", "int"), column("prefs", "json")],
               "products": [column("id", "int"), column("attrs", "longtext")]}  # MariaDB's JSON
    assert json_problems(columns, refresh=False) == []  # skipped by its length, never decoded
    assert json_problems(columns, refresh=True) == [
        "users.prefs is MySQL's binary JSON (json): refresh mode would decode it in every row image;"
        " set INVALIDATOR_MODE=delete, or store it as LONGTEXT"]
