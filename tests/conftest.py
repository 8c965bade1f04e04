"""Shared fixtures: one real model bundle per session, real databases, real keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hubdb import reset_postgres

from cloud_hub.poisoning import EmbeddingChecker
from cloud_hub.serving import HubModel
from cloud_hub.store import Store, sqlite_url
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime
from escalade.modelbuild import build_bundle

POSTGRES_URL = os.environ.get("ESCALADE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    build_bundle("digits", out, seed=0)
    return out


@pytest.fixture(scope="session")
def clean_embedding(bundle_dir: Path) -> npt.NDArray[np.float32]:
    """A real embedding (the encoder's output for a test input) that the hub's checks pass."""
    runtime = EdgeRuntime(bundle_dir, load_profile("x86-64-cpu"))
    hub = HubModel(bundle_dir)
    checker = EmbeddingChecker(hub.reference)
    with np.load(bundle_dir / "test.npz") as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    for features in inputs:
        embedding = runtime.infer(features).embedding.astype(np.float16).astype(np.float32)
        label = int(np.argmax(hub.predict(embedding)))
        if checker.check(embedding, label).score < 0.9:
            return embedding
    raise AssertionError("no test input passes the poisoning checks comfortably")


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
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a real, empty database (no file yet for SQLite; a reset PostgreSQL)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    yield POSTGRES_URL


@pytest.fixture(params=_backends())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real, empty hub database: an SQLite file, or the CI PostgreSQL server."""
    if request.param == "sqlite":
        opened = Store.open(sqlite_url(tmp_path), migrate=True)
    else:
        assert POSTGRES_URL is not None
        reset_postgres(POSTGRES_URL)
        opened = Store.open(POSTGRES_URL, migrate=True)
    try:
        yield opened
    finally:
        opened.close()
