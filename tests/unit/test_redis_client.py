"""The hub's one-server Redis client (hub.store.redis.client.HubRedis): plain
commands and pipelines without MULTI on a connection of the calling thread's
own, answered as redis-py answers them, never left out of step with the
server, and sent again through redis-py's own path when the socket fails."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
from redis.exceptions import ResponseError

from hub.store.redis.base import RedisBase
from hub.store.redis.client import HubRedis, LeanPipeline, client_from_url


@pytest.fixture
def pair(redis_url):
    """The hub's client and redis-py's plain one on the same server, the test's keys gone after."""
    ours, plain = client_from_url(redis_url), redis.Redis.from_url(redis_url)
    yield ours, plain
    plain.delete(*(plain.keys("lean:*") or ["lean:none"]))
    ours.close()
    plain.close()


def _fill(client) -> None:
    client.hset("lean:h", mapping={"a": 1, "b": "é"})
    client.rpush("lean:l", 1, 2, 3)
    client.zadd("lean:z", {"x": 1.5, "y": 2})


def test_commands_and_pipelines_answer_as_redis_py_does(pair):
    ours, plain = pair
    assert isinstance(ours, HubRedis) and isinstance(ours.pipeline(transaction=False), LeanPipeline)
    _fill(ours)
    for client in (ours, plain):
        client.set("lean:n", 0)

    def queue(target):
        target.hgetall("lean:h")
        target.lrange("lean:l", 0, -1)
        target.zrange("lean:z", 0, -1, withscores=True)
        target.exists("lean:h", "lean:missing")
        target.incr("lean:n")
        target.get("lean:missing")
        target.expire("lean:h", 100)
        return target

    answers = []
    for client in (ours, plain):
        answers.append(queue(client.pipeline(transaction=False)).execute())
        answers.append([client.hgetall("lean:h"), client.lrange("lean:l", 0, -1),
                        client.zrange("lean:z", 0, -1, withscores=True), client.exists("lean:h", "lean:missing")])
    assert answers[0][:4] == answers[2][:4] and answers[1] == answers[3]
    assert answers[0][0] == {b"a": b"1", b"b": "é".encode()} and answers[0][2] == [(b"x", 1.5), (b"y", 2.0)]
    assert (answers[0][4], answers[2][4]) == (1, 2) and answers[0][5] is None and answers[0][6] is True


def test_a_server_error_is_answered_and_the_connection_stays_in_step(pair):
    ours, _ = pair
    ours.set("lean:s", "text")
    pipe = ours.pipeline(transaction=False)
    pipe.get("lean:s")
    pipe.lpush("lean:s", 1)  # WRONGTYPE
    pipe.set("lean:after", 1)
    with pytest.raises(redis.ResponseError, match=r"Command # 2 \(LPUSH lean:s 1\) of pipeline"):
        pipe.execute()
    assert ours.get("lean:after") == b"1"  # the rest of the pipeline ran, and every reply was read
    pipe = ours.pipeline(transaction=False)
    pipe.lpush("lean:s", 1)
    pipe.get("lean:s")
    error, value = pipe.execute(raise_on_error=False)
    assert isinstance(error, redis.ResponseError) and value == b"text"
    with pytest.raises(redis.ResponseError):
        ours.lpush("lean:s", 1)
    assert ours.get("lean:s") == b"text"


def test_a_failing_reply_callback_drops_the_connection_rather_than_leave_replies_unread(pair, monkeypatch):
    ours, _ = pair
    ours.set("lean:a", 1)
    ours.set("lean:b", 2)
    first = ours.own_connection()

    def broken(response, **options):
        raise ValueError("callback failed")
    monkeypatch.setitem(ours.response_callbacks, "TTL", broken)
    pipe = ours.pipeline(transaction=False)
    pipe.ttl("lean:a")
    pipe.get("lean:a")
    pipe.get("lean:b")
    with pytest.raises(ValueError):
        pipe.execute()
    monkeypatch.undo()
    assert first._sock is None  # disconnected: the two GET replies went with it
    assert ours.get("lean:b") == b"2" and ours.mget("lean:a", "lean:b") == [b"1", b"2"]


def test_a_dead_socket_sends_the_call_again_through_redis_pys_own_path(pair):
    ours, plain = pair
    ours.set("lean:k", "v")
    own = ours.own_connection()
    pooled = ours.connection_pool._created_connections
    plain.client_kill_filter(_id=ours.client_id())  # the server drops the thread's connection
    assert ours.get("lean:k") == b"v"  # the send or the read failed, redis-py's path answered
    assert ours.connection_pool._created_connections > pooled  # through a connection of the pool
    assert own._sock is None
    pipe = ours.pipeline(transaction=False)
    pipe.get("lean:k")
    pipe.incr("lean:c")
    plain.client_kill_filter(_id=ours.client_id())
    assert pipe.execute() == [b"v", 1]
    assert ours.get("lean:c") == b"1"  # sent again whole, as redis-py's retry sends it; INCR ran once here


def test_each_thread_has_a_connection_of_its_own(pair):
    ours, _ = pair
    ids: dict[str, int] = {}
    errors: list[Exception] = []

    def work(name: str) -> None:
        try:
            ids[name] = ours.client_id()
            for i in range(300):
                pipe = ours.pipeline(transaction=False)
                pipe.set(f"lean:{name}", i)
                pipe.get(f"lean:{name}")
                assert pipe.execute() == [True, str(i).encode()]
                assert ours.incr(f"lean:count:{name}") == i + 1
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(ids.values())) == 3


def test_multi_exec_and_watch_keep_redis_pys_path(pair):
    ours, _ = pair
    pipe = ours.pipeline()  # transaction=True
    pipe.set("lean:t", 1)
    pipe.incr("lean:t")
    assert pipe.execute() == [True, 2]

    assert ours.transaction(_bump, "lean:t") == [True]
    assert ours.get("lean:t") == b"3"


def _bump(tx) -> None:
    """WATCH lean:t, read it, and write it plus one in MULTI."""
    value = int(tx.get("lean:t"))
    tx.multi()
    tx.set("lean:t", value + 1)


def _sends(monkeypatch, client) -> list:
    """What the thread's own connection sends from now on, a list per write."""
    client.ping()  # connected: the handshake's own writes are done
    connection = client.own_connection()
    writes = []
    sent = connection.send_packed_command
    monkeypatch.setattr(connection, "send_packed_command",
                        lambda command, *a, **k: (writes.append(command), sent(command, *a, **k))[1])
    return writes


def test_a_pipeline_goes_out_in_one_write_however_large(pair, monkeypatch):
    """redis-py would send a pipeline in pieces of 6,000 bytes, a large value in a piece of its own."""
    ours, plain = pair
    writes = _sends(monkeypatch, ours)
    connection = ours.own_connection()
    large = b"x" * 20_000
    pipe = ours.pipeline(transaction=False)
    for i in range(40):
        pipe.set(f"lean:{i}", large if i % 10 == 0 else b"small %d" % i)
    assert pipe.execute() == [True] * 40
    assert len(writes) == 1 and len(writes[0]) == 1 and len(writes[0][0]) > 80_000
    assert connection.pack_commands([("SET", "lean:0", large), ("SET", "lean:1", large)]).__len__() > 1
    assert [plain.get(f"lean:{i}") for i in (0, 1, 10)] == [large, b"small 1", large]


# writes held for the next round trip (HubRedis.writes_together, HubRedis.later)

def _held(client, *commands) -> bool:
    """A pipeline of `commands` ((name, *args)) held for the next round trip: True if it was."""
    pipe = client.pipeline(transaction=False)
    for name, *args in commands:
        pipe.execute_command(name, *args)
    return pipe.later()


def test_held_writes_go_out_with_the_next_round_trip_ahead_of_it(pair, monkeypatch):
    ours, plain = pair
    writes = _sends(monkeypatch, ours)
    with ours.writes_together():
        assert _held(ours, ("HSET", "lean:h", "a", "1"), ("ZADD", "lean:z", "1", "x"))
        assert _held(ours, ("SET", "lean:s", "2"))
        assert writes == [] and plain.exists("lean:h", "lean:z", "lean:s") == 0  # not sent yet
        assert ours.hget("lean:h", "a") == b"1"  # they ran first: this client reads its own writes
        assert len(writes) == 1  # one round trip carried the three and the read
        pipe = ours.pipeline(transaction=False)
        pipe.get("lean:s")
        pipe.zscore("lean:z", "x")
        assert pipe.execute() == [b"2", 1.0]  # a pipeline's replies are its own commands', not the held ones'
        assert _held(ours, ("SET", "lean:t", "3"))
        assert plain.get("lean:t") is None
    assert plain.get("lean:t") == b"3"  # what still waited went out as the scope ended
    assert len(writes) == 3


def test_outside_a_scope_nothing_is_held(pair):
    ours, plain = pair
    assert not _held(ours, ("SET", "lean:s", "1"))
    pipe = ours.pipeline(transaction=False)
    pipe.set("lean:s", "1")
    assert not pipe.later() and pipe.execute() == [True]  # still the caller's to send
    base = RedisBase(ours)
    pipe = ours.pipeline(transaction=False)
    pipe.set("lean:b", "1")
    asyncio.run(base._write(pipe, "test"))
    assert plain.get("lean:b") == b"1"


def test_a_held_write_that_fails_is_raised_by_its_scope_not_by_the_read_that_carried_it(pair):
    ours, plain = pair
    plain.hset("lean:h", "a", "1")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        with ours.writes_together():
            assert _held(ours, ("INCR", "lean:h"), ("SET", "lean:after", "1"))
            assert ours.get("lean:after") == b"1"  # the read is answered; the writes after the failed one ran
    assert plain.get("lean:after") == b"1"


def test_only_the_scopes_task_holds_its_writes_and_any_round_trip_carries_them(pair):
    """A scope belongs to its asyncio task: another task's writes go out at once, and its next round trip
    carries what the scope's task holds, in the order the two made them."""
    ours, plain = pair
    order: list[str] = []

    async def scoped(started: asyncio.Event, go_on: asyncio.Event) -> None:
        with ours.writes_together():
            assert _held(ours, ("RPUSH", "lean:l", "scoped"))
            started.set()
            await go_on.wait()
            order.append("scoped ends")

    async def other(started: asyncio.Event, go_on: asyncio.Event) -> None:
        await started.wait()
        assert not _held(ours, ("RPUSH", "lean:l", "other"))  # not in the scope: the caller sends it
        ours.rpush("lean:l", "other")  # carries the scoped task's held write ahead of it
        order.append("other wrote")
        go_on.set()

    async def main() -> None:
        started, go_on = asyncio.Event(), asyncio.Event()
        await asyncio.gather(scoped(started, go_on), other(started, go_on))
    asyncio.run(main())
    assert order == ["other wrote", "scoped ends"]
    assert plain.lrange("lean:l", 0, -1) == [b"scoped", b"other"]


def test_another_thread_sends_its_writes_at_once(pair):
    ours, plain = pair
    held: list[bool] = []
    with ours.writes_together():
        thread = threading.Thread(target=lambda: held.append(_held(ours, ("SET", "lean:s", "1"))))
        thread.start()
        thread.join()
    assert held == [False]


def test_multi_and_watch_see_the_held_writes(pair):
    ours, _ = pair
    with ours.writes_together():
        assert _held(ours, ("SET", "lean:t", "5"))
        pipe = ours.pipeline()  # transaction=True: redis-py's path, on a connection of the pool
        pipe.incr("lean:t")
        assert pipe.execute() == [6]
        assert _held(ours, ("SET", "lean:t", "10"))
        assert ours.transaction(_bump, "lean:t") == [True]
    assert ours.get("lean:t") == b"11"


def test_held_writes_survive_a_dead_socket(pair):
    ours, plain = pair
    ours.ping()
    with ours.writes_together():
        assert _held(ours, ("SET", "lean:s", "1"))
        plain.client_kill_filter(_id=ours.client_id())
        assert ours.get("lean:s") == b"1"  # sent again, then the read, through redis-py's path
        assert _held(ours, ("SET", "lean:u", "2"))
        plain.client_kill_filter(_id=ours.client_id())
    assert plain.get("lean:u") == b"2"


def test_a_script_held_for_later_runs_on_a_server_that_lost_its_scripts(pair):
    ours, plain = pair
    base = RedisBase(ours)
    script = base._script("return redis.call('SET', KEYS[1], ARGV[1])")
    plain.script_flush()
    with ours.writes_together():
        base._eval_each_later(script, [("lean:a", ["1"]), ("lean:b", ["2"])], "test")
        assert plain.get("lean:a") is None
    assert plain.mget("lean:a", "lean:b") == [b"1", b"2"]


def test_a_held_read_is_answered_by_the_round_trip_that_carries_it(pair, monkeypatch):
    ours, plain = pair
    plain.set("lean:r", "1")
    plain.hset("lean:h", "a", "2")
    writes = _sends(monkeypatch, ours)
    with ours.writes_together():
        pipe = ours.pipeline(transaction=False)
        pipe.get("lean:r")
        pipe.hgetall("lean:h")
        held = pipe.later_read()
        assert held is not None and writes == []
        assert ours.incr("lean:n") == 1  # carries the read
        assert len(writes) == 1
        assert held.get() == [b"1", {b"a": b"2"}]  # parsed as the pipeline would have
        assert len(writes) == 1  # nothing sent again
        pipe = ours.pipeline(transaction=False)
        pipe.get("lean:n")
        alone = pipe.later_read()
        assert alone.get() == [b"1"] and len(writes) == 2  # nothing carried it: sent when wanted
        pipe = ours.pipeline(transaction=False)
        pipe.hgetall("lean:r")
        wrong = pipe.later_read()
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            wrong.get()  # raised to its reader, as the pipeline would
    pipe = ours.pipeline(transaction=False)
    pipe.get("lean:r")
    assert pipe.later_read() is None  # outside a scope: the caller sends it


def test_an_index_read_held_for_later_runs_on_a_server_that_lost_its_scripts(pair):
    ours, plain = pair
    base = RedisBase(ours)
    script = base._script("return redis.call('GET', KEYS[1] .. ARGV[1])")
    plain.set("{hub:}lean:x", "7")
    plain.script_flush()
    with ours.writes_together():
        reply = base._index_soon(script, ["lean:x"], "test")
        assert reply() == b"7"
    assert base._index_soon(script, ["lean:x"], "test")() == b"7"  # outside a scope: at once
    plain.delete("{hub:}lean:x")


def test_a_task_started_in_a_scope_and_outliving_it_sends_its_writes_at_once(pair):
    ours, plain = pair

    async def main() -> None:
        go_on = asyncio.Event()

        async def straggler() -> None:
            await go_on.wait()
            assert not _held(ours, ("SET", "lean:late", "1"))  # its scope has ended: nothing to carry it
        with ours.writes_together():
            task = asyncio.ensure_future(straggler())  # sees the scope in the context it copied
            assert _held(ours, ("SET", "lean:early", "1"))
        go_on.set()
        await task
    asyncio.run(main())
    assert plain.get("lean:early") == b"1"
