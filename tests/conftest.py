"""Shared test helpers.

`HUB_TEST_STRICT=1` (set by .ci/run) turns a test that skips because
something it needs is missing (a Redis server, Redis 7 for the cluster,
Prometheus, promtool) into a failure: CI provides all of it, so a skip there
would hide a test that matters. A test that may skip even then says so with
`@pytest.mark.optional`."""

import os

import pytest

from hub.crypto import new_key

# the hub refuses to run without a PII key: one random key for this test session, shared by the test
# process, the workers it starts and the stores it opens (a test about the missing key removes it)
os.environ.setdefault("HUB_PII_KEY", new_key())

STRICT = os.environ.get("HUB_TEST_STRICT") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "optional: may skip even under HUB_TEST_STRICT=1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not item.get_closest_marker("optional"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped under HUB_TEST_STRICT=1, where it must run: {reason}"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """An embedded Redis server of the module's own."""
    from hub.connectors.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_store(redis_url):
    """A RedisStore on the module's embedded Redis (a fixed test keyring), empty before and after the test."""
    import asyncio

    from hub.store.redis import RedisStore
    from hub.crypto import Keyring

    store = RedisStore.from_url(redis_url, Keyring([("k0", b"\x01" * 32)]))
    store.client.flushdb()
    yield store
    store.client.flushdb()
    asyncio.run(store.close())


@pytest.fixture
def clock(monkeypatch):
    """clock(year): date.today() answers 1 June of that year for the rest of
    the test (what a replay years later, or a worker with a wrong clock, sees)."""
    import datetime

    real_date = datetime.date

    def set_year(year: int) -> None:
        class Clock(real_date):
            @classmethod
            def today(cls):
                return real_date(year, 6, 1)

        monkeypatch.setattr(datetime, "date", Clock)

    return set_year
