"""A password reaches a connection string in a URL's user info, in its query (libpq takes
``?password=``) or as a libpq keyword/value pair; each is hidden in errors, logs and
``relaydesk config show``. Only the first was: ``postgresql://rd@db/x?password=…`` and
``host=db password=…`` were printed as given."""

from __future__ import annotations

import pytest

from services.bus.auth import redact_url
from services.timelines import is_dsn, target_problem
from services.url_secrets import is_keyword_dsn, redact


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://rd:s3cret@db:5432/relaydesk", "postgresql://rd:****@db:5432/relaydesk"),
        (
            "postgresql://rd@db/relaydesk?password=s3cret&sslmode=require",
            "postgresql://rd@db/relaydesk?password=****&sslmode=require",
        ),
        ("postgresql://rd@db/x?sslpassword=s3cret", "postgresql://rd@db/x?sslpassword=****"),
        ("host=db dbname=relaydesk user=rd password=s3cret", "host=db dbname=relaydesk user=rd password=****"),
        ("host=db password = 's3cret with spaces' dbname=x", "host=db password = **** dbname=x"),
        ("nats://relay:s3cret@a:4222,nats://b:4222", "nats://relay:****@a:4222,nats://b:4222"),
        ("https://hooks.slack.com/services/T0/B0/s3cret", "https://hooks.slack.com/services/****"),
        ("/var/lib/relaydesk/timelines.db", "/var/lib/relaydesk/timelines.db"),
    ],
)
def test_every_password_in_a_connection_string_is_hidden(given: str, shown: str) -> None:
    assert redact(given) == shown
    assert redact_url(given) == shown
    assert "s3cret" not in redact(given)


def test_a_keyword_dsn_is_postgresql_not_the_name_of_an_sqlite_file() -> None:
    """``[projection] dsn = "host=db dbname=relaydesk"`` (libpq's other form, which psycopg
    takes) opened an SQLite file of that name in the working directory: the projector folded
    into it, and the API read it, while PostgreSQL stayed empty."""
    for target in ("host=db dbname=relaydesk", "dbname=relaydesk", "  user=rd host=db", "service=relaydesk"):
        assert is_keyword_dsn(target) and is_dsn(target) and target_problem(target) is None
    for path in ("timelines.db", "./data/host=db.db", "/srv/a=b/timelines.db", "hostile=1.db"):
        assert not is_dsn(path), path
