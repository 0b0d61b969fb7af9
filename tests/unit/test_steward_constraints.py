"""A steward's decisions about a pair: the latest replaces the one before,
and a release lifts both (the workbench's undo)."""

from __future__ import annotations

import asyncio

import pytest

from hub.store.redis import RedisStore


@pytest.fixture
def store(redis_url):
    store = RedisStore.from_url(redis_url)
    store.client.flushdb()
    return store


def test_link_split_release(store):
    run = asyncio.run
    run(store.add_constraints("split", "crm:1", ["pos:1", "web:1"]))
    assert run(store.constraints(["crm:1", "pos:1"])) == {"crm:1": ({"pos:1", "web:1"}, set()),
                                                          "pos:1": ({"crm:1"}, set())}
    run(store.add_constraints("link", "pos:1", ["crm:1"]))  # changed its mind: together now
    assert run(store.constraints(["crm:1", "pos:1"])) == {"crm:1": ({"web:1"}, {"pos:1"}),
                                                          "pos:1": (set(), {"crm:1"})}
    run(store.add_constraints("release", "crm:1", ["pos:1", "web:1"]))
    assert run(store.constraints(["crm:1", "pos:1", "web:1"])) == {}
