"""The shared SQL's dialect rule: ``?`` placeholders and byte-order sorting for asyncpg."""

from __future__ import annotations

from tidings.server.storage.sql import numbered


def test_placeholders_are_numbered_in_order_outside_quotes() -> None:
    sql = "SELECT a FROM t WHERE app=? AND note='why?' AND b IN (?, ?) LIMIT ?"
    assert (
        numbered(sql) == "SELECT a FROM t WHERE app=$1 AND note='why?' AND b IN ($2, $3) LIMIT $4"
    )


def test_binary_collation_is_postgresqls_c_collation() -> None:
    assert numbered("SELECT id FROM c ORDER BY id COLLATE BINARY") == (
        'SELECT id FROM c ORDER BY id COLLATE "C"'
    )


def test_sql_already_numbered_is_left_as_it_is() -> None:
    sql = "SELECT * FROM t WHERE app=$1 AND user_key = ANY($2::text[])"
    assert numbered(sql) == sql
