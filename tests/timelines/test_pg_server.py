"""How the timeline tests find PostgreSQL (``helpers.postgres``): a missing database is
created, and a server that does not answer gives a reason to skip, not a failure."""

from __future__ import annotations

import uuid

import pytest

from tests.timelines.helpers import ensure_database, pg_dsn


def test_no_server_gives_a_reason() -> None:
    reason = ensure_database("postgresql://postgres:secret@127.0.0.1:1/test")
    assert reason is not None and reason.startswith("no PostgreSQL at postgres@127.0.0.1:1/test: ")
    assert "secret" not in reason


def test_a_missing_database_is_created() -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    server = pg_dsn()  # skips without a server
    name = f"relaydesk_t_{uuid.uuid4().hex[:10]}"
    missing = make_conninfo(server, dbname=name)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(missing, connect_timeout=2).close()
    try:
        assert ensure_database(missing) is None
        with psycopg.connect(missing, connect_timeout=2) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
        assert ensure_database(missing) is None  # there already: nothing to do
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
