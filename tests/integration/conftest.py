"""Integration fixtures: a real Kafka-protocol broker (embedded Tansu) and a
real Redis server, with workers started as separate `hub run` processes."""

from __future__ import annotations

import pytest

from hub.config import load_pipeline
from hub.testing.harness import Feeder, LocalHub

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(None)


@pytest.fixture
def local_hub(pipeline, tmp_path):
    hub = LocalHub(pipeline, tmp_path).start()
    yield hub
    hub.stop()


@pytest.fixture
def shared_redis():
    """A database of its own on the machine's Redis server (the one production-like tests share)."""
    import os

    import redis

    # HUB_TEST_REDIS_URL lets parallel test runs on one machine use different databases
    url = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis server on 127.0.0.1:6379 (.ci/run starts one)")
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def feeder(local_hub):
    return Feeder(local_hub.bootstrap)
