"""Shared test helpers."""

import os

import pytest

from hub.crypto import new_key

# the hub refuses to run without a PII key: one random key for this test session, shared by the test
# process, the workers it starts and the stores it opens (a test about the missing key removes it)
os.environ.setdefault("HUB_PII_KEY", new_key())


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """An embedded Redis server of the module's own."""
    from hub.connectors.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()
