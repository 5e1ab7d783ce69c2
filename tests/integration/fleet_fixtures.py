"""Fixtures for the fleet primitives: a fresh PostgreSQL database with the fleet's tables, and
instances as processes of their own (:class:`tests.integration.fleet_helpers.Nodes`), stopped after the test.

Loaded with ``pytest_plugins = ("tests.integration.central_fixtures", "tests.integration.fleet_fixtures")``
(the PostgreSQL server is central_fixtures' ``postgres_server``: one per test session).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.adapters import postgres
from central.adapters.fleet_schema import FLEET_MIGRATIONS
from tests.integration.fleet_helpers import Nodes
from tests.postgres_server import PgServer, create_database, drop_database

_numbers = itertools.count(1)


@pytest.fixture
def fleet_url(postgres_server: PgServer) -> Iterator[str]:
    """A fresh database holding only the fleet's migrations; dropped after the test."""
    name = f"pilegate_fleet_{os.getpid()}_{next(_numbers)}"
    url = create_database(postgres_server, name)
    db = postgres.connect(url)
    try:
        FLEET_MIGRATIONS.apply(db)
    finally:
        db.conn.close()
    yield url
    drop_database(postgres_server, name)


@pytest.fixture
def nodes(fleet_url: str, tmp_path: Path) -> Iterator[Nodes]:
    running = Nodes(fleet_url, tmp_path)
    try:
        yield running
    finally:
        for node in running.started:
            node.stop()


__all__ = ["fleet_url", "nodes"]
