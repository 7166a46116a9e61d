"""Shared fixtures.  Tests that need Redis use the real one at REDIS_URL or 127.0.0.1:6379;
under CI (CI=true) a missing Redis fails those tests instead of skipping them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_client() -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"no Redis at {REDIS_URL}: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    """A unique key prefix for one test, so tests never see each other's keys."""
    return f"retape-test:{uuid.uuid4().hex}"
