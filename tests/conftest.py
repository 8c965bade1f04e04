"""Shared fixtures: one real model bundle per session, real databases, real keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_hub.store import Store, sqlite_url
from cloud_hub.store.schema import metadata
from escalade.modelbuild import build_bundle

POSTGRES_URL = os.environ.get("ESCALADE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    build_bundle("digits", out, seed=0)
    return out


def _backends() -> list[object]:
    backends: list[object] = ["sqlite"]
    backends.append(
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    POSTGRES_URL is None, reason="set ESCALADE_TEST_POSTGRES_URL to run"
                ),
            ],
        )
    )
    return backends


@pytest.fixture(params=_backends())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real, empty hub database: an SQLite file, or the CI PostgreSQL server."""
    if request.param == "sqlite":
        opened = Store.open(sqlite_url(tmp_path))
    else:
        assert POSTGRES_URL is not None
        opened = Store.open(POSTGRES_URL)
        metadata.drop_all(opened.engine)
        metadata.create_all(opened.engine)
    try:
        yield opened
    finally:
        opened.close()
