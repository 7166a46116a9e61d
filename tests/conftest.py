"""Shared fixtures.  Tests that need Redis use the real one at REDIS_URL or 127.0.0.1:6379;
under CI (CI=true) a missing Redis fails those tests instead of skipping them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"

# The commands the tests run must not depend on the shell: with REDIS_URL exported,
# `retape audit` would submit to that Redis and wait for workers nobody started.  Tests
# that want a broker say so (REDIS_URL above, or --broker).
os.environ.pop("REDIS_URL", None)


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


@pytest.fixture(params=["redis", "valkey"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker URL, empty, on each server retape runs on: the machine's Redis (database 14,
    emptied before and after) and a valkey-server with a password, as `retape audit` embeds."""
    import redis

    if request.param == "redis":
        request.getfixturevalue("redis_client")
        url = REDIS_URL.rsplit("/", 1)[0] + "/14"
        client = redis.Redis.from_url(url)
        client.flushdb()
        yield url
        client.flushdb()
        client.close()
        return
    from producers.local import EmbeddedBroker

    with EmbeddedBroker(str(tmp_path_factory.mktemp("valkey"))) as server:
        yield server.url
