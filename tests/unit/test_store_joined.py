"""Round trips joined (hub.store.redis.base, `_joined`): what a stage gathers goes to Redis as one pipeline,
each caller gets its own answer or its own error, a script the server lost is loaded again, and a call made
alone still goes alone. On a real Redis (the module's embedded one)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from hub.ports import LinkRequest


class RoundTrips:
    """Counts what the client sends to the server: one per round trip, a pipeline being one."""

    def __init__(self, monkeypatch):
        self.count = 0
        plain = redis.connection.AbstractConnection.send_packed_command

        def counted(connection, *args, **kwargs):
            self.count += 1
            return plain(connection, *args, **kwargs)
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)


async def _seed(store) -> None:
    await store.link([LinkRequest("crm:1", "G1", {"a": 1}, ["b1"]), LinkRequest("pos:2", "G2", {"a": 2}, ["b1"])])
    await store.link([LinkRequest("web:3", "G3", {}, ["b1"], ["G1", "G2"])])  # G1 and G2 merged into G3
    await store.add_tombstones({"pos:9": 5})
    await store.put({"crm:1": [{"purpose": "marketing", "channel": "email", "status": "granted", "event_time": 7}]})


def test_gathered_reads_of_different_concerns_cost_one_round_trip(redis_store, monkeypatch):
    asyncio.run(_seed(redis_store))
    trips = RoundTrips(monkeypatch)

    async def gathered():
        return await asyncio.gather(
            redis_store.members(["crm:1", "web:3", "nobody:0"]), redis_store.blocks(["b1", "b9"], 100),
            redis_store.tombstones(["pos:9", "crm:1"]), redis_store.get(["crm:1"]),
            redis_store.survivors_and_folds(["G1", "G3"]), redis_store.load(["G3"]))

    asyncio.run(gathered())  # the first time, each script the server does not hold yet is loaded (a round trip more)
    trips.count = 0
    members, blocks, tombstones, consents, (survivors, folds), states = asyncio.run(gathered())
    assert trips.count == 1
    # each caller got its own answer, as alone
    assert {m: e.golden_id for m, e in members.items()} == {"crm:1": "G3", "web:3": "G3"}
    assert sorted(blocks["b1"].members) == ["crm:1", "pos:2", "web:3"] and blocks["b9"].members == []
    assert tombstones == {"pos:9": 5}
    assert [s["status"] for s in consents["crm:1"]] == ["granted"]
    assert survivors == {"G1": "G3", "G3": "G3"} and folds == {"G3": ["G1", "G2"]}
    assert set(states) == {"G3"}

    async def one_after_another():
        await redis_store.members(["crm:1"])
        await redis_store.tombstones(["pos:9"])

    trips.count = 0
    asyncio.run(one_after_another())
    assert trips.count == 2  # nothing waits for company: a call alone goes alone


def test_an_error_reaches_only_its_caller(redis_store):
    redis_store.client.set("hub:idx-not-a-zset", "x")

    async def gathered():
        pipe = redis_store.client.pipeline(transaction=False)
        pipe.zscore("hub:idx-not-a-zset", "m")  # WRONGTYPE
        return await asyncio.gather(redis_store._run(pipe, "broken"), redis_store.tombstones(["pos:9"]),
                                    return_exceptions=True)

    broken, fine = asyncio.run(gathered())
    assert isinstance(broken, redis.ResponseError) and "WRONGTYPE" in str(broken)
    assert fine == {}


def test_a_script_the_server_lost_is_loaded_again(redis_store):
    asyncio.run(_seed(redis_store))
    redis_store.client.script_flush()

    async def gathered():
        return await asyncio.gather(redis_store.members(["crm:1"]), redis_store.survivors_and_folds(["G2"]))

    members, (survivors, folds) = asyncio.run(gathered())
    assert members["crm:1"].golden_id == "G3" and survivors == {"G2": "G3"} and folds == {"G3": ["G1", "G2"]}


def test_a_dead_server_fails_every_caller_alike(redis_store, monkeypatch):
    def gone(*args, **kwargs):
        raise redis.ConnectionError("the server is gone")
    monkeypatch.setattr(redis.client.Pipeline, "execute", gone)

    async def gathered():
        return await asyncio.gather(redis_store.members(["crm:1"]), redis_store.tombstones(["pos:9"]),
                                    return_exceptions=True)

    results = asyncio.run(gathered())
    assert all(isinstance(r, redis.ConnectionError) for r in results)
    with pytest.raises(redis.ConnectionError):
        asyncio.run(redis_store.members(["crm:1"]))
