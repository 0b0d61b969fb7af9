"""Shared test helpers."""

import pytest


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """An embedded Redis server of the module's own."""
    from hub.connectors.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()
