"""Shared test helpers."""

import pytest


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """An embedded Redis server of the module's own."""
    from hub.connectors.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


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
