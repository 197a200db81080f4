"""Shared fixtures: a database on SQLite or PostgreSQL, and a running gateway.

Storage-facing tests take the ``backend`` fixture, parametrized over SQLite
and PostgreSQL. PostgreSQL is the server on 127.0.0.1:5432 (database
"test"); each test gets its own schema, dropped afterwards. Where PostgreSQL
is missing the tests skip on a laptop, but fail under CI=true: CI must run
them for real.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dovecot import dovecot, dovecot_factory  # noqa: F401 - fixtures for the IMAP tests
from tests.helpers import GatewayThread, write_config
from tests.smtp_sink import smtp_server  # noqa: F401 - a fixture, shared by the SMTP tests

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CI = os.environ.get("CI") == "true"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def require(available: bool, what: str) -> None:
    """Skip when a service is missing, but fail in CI, where it must be there."""
    if available:
        return
    if CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} not available")


def postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def corpus() -> Path:
    require(CORPUS.is_dir(), f"the shared email corpus at {CORPUS}")
    return CORPUS


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database; the URL that selects it."""
    require(postgres_available(), f"PostgreSQL at {POSTGRES_URL}")
    import psycopg2

    schema = "t_" + secrets.token_hex(6)
    with psycopg2.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    conn.close()
    options = urllib.parse.quote(f"-csearch_path={schema}")
    yield f"{POSTGRES_URL}?options={options}"
    with psycopg2.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: storage tests run on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return str(request.getfixturevalue("postgres_schema"))


@pytest.fixture
def config_path(tmp_path: Path, database_url: str) -> Path:
    """A mailboxes.toml with two mailboxes on the test database."""
    return write_config(tmp_path, database_url)


@pytest.fixture
def gateway(config_path: Path) -> Iterator[GatewayThread]:
    """A gateway running on its own loop in a thread, SMTP and LMTP on free ports."""
    with GatewayThread(config_path) as running:
        yield running
