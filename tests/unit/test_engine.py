"""The fused engine (hub.engine, HUB_ENGINE=fused) against the staged one, and
the golden-record leases it masters under (hub.ports.GoldenLeases).

The same generated stream (upserts, updates, deletes, invalid payloads,
consent, survey answers, a steward's split and link, erasures, half of it
redelivered) through both engines, on the in-memory store and on Redis:
every message on every topic a user reads (golden records, target slices
and their tombstones, audit events, review items, dead letters) is the same,
byte for byte and in order; only the hops the fused engine does not take
(customer.canonical, customer.linked) differ."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.config import load_pipeline
from hub.dataflow import stage_runners
from hub.engine import Chain
from hub.replay import Replay
from hub.crypto import Keyring
from hub.schemas import AUDIT, GOLDEN, LINKED, codec
from hub.topic_seal import open_value
from hub.stages.master import MasterStage
from hub.store.memory_store import MemoryStore
from test_memory_index import run
from test_memory_store import NOW, SECRET, ListSink, _stream

PIPELINE = load_pipeline(None)
HOPS = {PIPELINE.topics.canonical, PIPELINE.topics.linked}


async def _replay(store, messages, engine: str, batch: int = 60, keyring=None):
    sink = ListSink()
    driver = Replay(PIPELINE, stage_runners(PIPELINE, store, sink, SECRET, keyring, engine), sink, batch, engine)
    await driver.run(messages)
    await driver.run(messages[len(messages) // 2:])
    return sink.records


SEALED = {PIPELINE.topics.golden: GOLDEN, PIPELINE.topics.audit: AUDIT}


def _by_topic(records, keyring=None) -> dict[str, list]:
    """Per topic, (key, value, headers) in order; sealed values opened (a seal's nonce differs each time)."""
    topics: dict[str, list] = {}
    for r in records:
        value = r.value
        if keyring is not None and value is not None and r.topic in SEALED:
            value = codec(SEALED[r.topic]).encode(open_value(keyring, SEALED[r.topic], value, r.topic, r.key))
        topics.setdefault(r.topic, []).append((r.key, value, list(r.headers)))
    return topics


@pytest.mark.parametrize("store_kind,sealed", [("memory", False), ("redis", False), ("memory", True)])
def test_the_fused_engine_writes_what_the_staged_one_does(store_kind, sealed, request, monkeypatch):
    """With the internal topics sealed (HUB_SEAL_TOPICS) too: the fused engine hands the records on open."""
    monkeypatch.setattr(time, "time", lambda: NOW / 1000)
    messages = _stream()
    keyring = Keyring([("t0", b"\x02" * 32)]) if sealed else None

    def store():
        if store_kind == "memory":
            return MemoryStore()
        held = request.getfixturevalue("redis_store")
        held.client.flushdb()
        return held

    staged = _by_topic(asyncio.run(_replay(store(), messages, "staged", keyring=keyring)), keyring)
    fused = _by_topic(asyncio.run(_replay(store(), messages, "fused", keyring=keyring)), keyring)
    assert HOPS <= staged.keys()
    # what the staged engine sends round customer.linked (contributions, recomputes, erasures, a steward's
    # split) the fused one hands on in the pass
    assert PIPELINE.topics.linked not in fused
    assert {"contribution", "recompute", "erase", "split"} <= {
        codec(LINKED).decode(value)["kind"] for _, value, _ in staged[PIPELINE.topics.linked]}
    # on customer.canonical only the erasures' tombstones, as the staged engine writes them
    erased = [m for m in staged[PIPELINE.topics.canonical] if m[1] is None]
    assert erased and fused[PIPELINE.topics.canonical] == erased
    read = sorted(staged.keys() - HOPS)
    assert read == sorted(fused.keys() - HOPS)
    assert PIPELINE.topics.golden in read and any(t.startswith("mastered.") for t in read)
    assert any(t.startswith("dlq.") for t in read) and PIPELINE.topics.audit in read
    for topic in read:
        assert fused[topic] == staged[topic], topic
    if store_kind == "redis":
        assert not list(request.getfixturevalue("redis_store").client.scan_iter(match="hub:lease:*"))


@pytest.fixture(params=["memory", "redis"])
def leases(request):
    return MemoryStore() if request.param == "memory" else request.getfixturevalue("redis_store")


def test_leases_are_all_or_none_renewed_by_their_holder_and_expire(leases):
    assert run(leases.lease(["G1", "G2"], "a", 60_000)) == []
    assert run(leases.lease(["G2", "G3"], "b", 60_000)) == ["G2"]
    assert run(leases.lease(["G3"], "c", 60_000)) == []  # b took none: G3 was free again
    assert run(leases.lease(["G1", "G2"], "a", 60_000)) == []  # renewed
    run(leases.release(["G1", "G2", "G3"], "b"))  # not b's to give back
    assert run(leases.lease(["G1"], "b", 60_000)) == ["G1"]
    run(leases.release(["G1", "G2"], "a"))
    assert run(leases.lease(["G1", "G2"], "b", 50)) == []
    time.sleep(0.12)
    assert run(leases.lease(["G2"], "a", 60_000)) == []  # b's expired


def _linked_batch():
    """Two linked records for the same new golden id, from the staged engine's match stage."""
    store, sink = MemoryStore(), ListSink()
    runners = stage_runners(PIPELINE, store, sink, SECRET, engine="staged")
    messages = [m for m in _stream(persons=6) if m.topic.startswith("raw.")][:4]
    driver = Replay(PIPELINE, {k: v for k, v in runners.items() if k in ("ingest", "match")}, sink, 100, "staged")
    driver.order = ("ingest", "match")
    asyncio.run(driver.run(messages))
    from hub.records import InMessage

    return [InMessage(r.topic, 0, i, r.key, r.value) for i, r in enumerate(sink.records)
            if r.topic == PIPELINE.topics.linked]


def _leased_master(store):
    """A linked batch, its golden ids, and a master step leasing them as "mine" on `store`."""
    linked = _linked_batch()
    gids = sorted({m.key.decode() for m in linked})
    return linked, gids, MasterStage(PIPELINE, store, store, store, SECRET, store, leases=store, lease_owner="mine")


def test_a_master_pass_waits_for_a_golden_record_another_holds_and_gives_its_own_back(leases):
    """In memory and on Redis: refused, the pass waits; once it holds its records, it reads them under the
    leases and keeps them until its outputs are delivered."""
    store = leases
    linked, gids, master = _leased_master(store)
    assert run(store.lease(gids[:1], "theirs", 60_000)) == []

    async def scenario():
        task = asyncio.ensure_future(master.process(linked, now_ms=NOW))
        await asyncio.sleep(0.1)
        assert not task.done()  # waiting: the record is theirs
        assert await store.lease(gids, "anyone", 1) == gids[:1]
        await store.release(gids, "theirs")
        output = await asyncio.wait_for(task, 5)
        assert any(m.topic == PIPELINE.topics.golden for m in output.messages)
        assert await store.lease(gids, "anyone", 1) == gids  # held until the outputs are delivered
        await output.after_delivery()
        assert await store.lease(gids, "anyone", 1) == []

    asyncio.run(scenario())


def _waits() -> tuple[float, float]:
    from hub import metrics
    return (metrics.REGISTRY.get_sample_value("hub_golden_lease_waits_total") or 0.0,
            metrics.REGISTRY.get_sample_value("hub_golden_claim_waits_total") or 0.0)


def test_the_passes_of_one_worker_take_turns_on_a_golden_record_without_being_refused(leases):
    """In memory and on Redis: a worker's hot path and its consent pass share its lease owner; the second
    waits in the process for the first's delivery, never refused by the store nor sleeping, and goes on as
    soon as the first gives the record back."""
    store = leases
    linked = _linked_batch()
    gids = sorted({m.key.decode() for m in linked})
    hot, consent = (MasterStage(PIPELINE, store, store, store, SECRET, store, leases=store,
                                lease_owner="worker-1") for _ in range(2))

    async def scenario():
        first = await hot.process(linked, now_ms=NOW)
        lease_waits, claim_waits = _waits()
        second = asyncio.ensure_future(consent.process(linked, now_ms=NOW))
        await asyncio.sleep(0.1)
        assert not second.done()  # the record is the hot pass's until its outputs are delivered
        assert _waits() == (lease_waits, claim_waits + 1)  # waited once, in the process, for the one holder
        await first.after_delivery()
        output = await asyncio.wait_for(second, 1)
        assert _waits() == (lease_waits, claim_waits + 1)
        assert any(m.topic == PIPELINE.topics.golden for m in output.messages)
        assert await store.lease(gids, "anyone", 1) == gids  # the second holds them now, in the store too
        await output.after_delivery()
        assert await store.lease(gids, "anyone", 1) == []

    asyncio.run(scenario())


def test_a_pass_whose_delivery_failed_gives_back_what_it_held_and_is_tried_again():
    """Its retry (and the worker's other passes) would otherwise wait for it forever."""
    from hub.runner import StageRunner
    from test_runner_limits import FakeSink

    store = MemoryStore()
    linked = _linked_batch()
    gids = sorted({m.key.decode() for m in linked})
    master = MasterStage(PIPELINE, store, store, store, SECRET, store, leases=store, lease_owner="worker-1")
    sink = FakeSink(outages=1, max_message_bytes=1_000_000)
    runner = StageRunner("master", master, sink, lambda m: "dlq.master", is_async=True)
    run(asyncio.wait_for(runner.run(linked), 10))
    assert any(m.topic == PIPELINE.topics.golden for m in sink.delivered)
    assert run(store.lease(gids, "anyone", 1)) == []


def test_a_chain_gives_back_what_its_earlier_steps_hold_when_a_later_step_fails():
    from hub.engine import Step
    from hub.records import InMessage, OutMessage
    from hub.stages import StageOutput

    given_back = []

    class Holding:
        async def process(self, batch):
            async def abandon():
                given_back.append("master")
            return StageOutput([OutMessage("next", m.key, m.value) for m in batch], abandon=abandon)

    class Failing:
        async def process(self, batch):
            raise ConnectionError("Redis went away")

    chain = Chain([Step("master", Holding(), True, "next"), Step("syndicate", Failing(), True)])
    with pytest.raises(ConnectionError):
        run(chain.process([InMessage("raw", 0, 0, b"k", b"v")]))
    assert given_back == ["master"]


def test_a_master_pass_that_fails_gives_its_leases_back():
    store = MemoryStore()
    linked = _linked_batch()
    gids = sorted({m.key.decode() for m in linked})
    master = MasterStage(PIPELINE, store, store, store, SECRET, store, leases=store, lease_owner="mine")

    async def broken(*args, **kwargs):
        raise RuntimeError("the store failed")
    store.golden_store.load = broken
    with pytest.raises(RuntimeError):
        run(master.process(linked, now_ms=NOW))
    assert run(store.lease(gids, "anyone", 1)) == []


def test_a_chain_hands_on_what_the_next_step_reads_and_writes_the_rest():
    from hub.records import OutMessage
    from hub.stages import StageOutput

    done = []

    class Step:
        def __init__(self, name, topic):
            self.name, self.topic = name, topic

        async def process(self, batch):
            async def after():
                done.append(self.name)
            out = [OutMessage(self.topic, m.key, (m.value or b"") + self.name.encode()) for m in batch]
            return StageOutput(out + [OutMessage("audit", b"a", self.name.encode())], after)

    from hub.engine import Step as S
    from hub.records import InMessage
    chain = Chain([S("ingest", Step("ingest", "canonical"), True, "canonical"),
                   S("master", Step("master", "golden"), True, "golden", keeps=True),
                   S("syndicate", Step("syndicate", "target"))])
    output = run(chain.process([InMessage("raw", 0, 0, b"k", b"v")]))
    assert [(m.topic, m.value) for m in output.messages] == [
        ("audit", b"ingest"), ("golden", b"vingestmaster"), ("audit", b"master"),
        ("target", b"vingestmastersyndicate"), ("audit", b"syndicate")]
    run(output.after_delivery())
    assert done == ["syndicate", "master", "ingest"]


def test_a_save_is_fenced_by_the_lease_it_was_made_under(leases):
    """A pass that held on past its lease writes nothing once another has the record (hub.ports.LeaseLost)."""
    from hub.ports import GoldenState, LeaseLost

    store = leases
    first = GoldenState("G1", {"crm:1": {"record": {"event_time": 1}}}, {"golden_id": "G1", "last_event_time": 1})
    assert run(store.lease(["G1", "G2"], "a", 60_000)) == []
    run(store.save([first, GoldenState("G2", {"crm:2": {}}, {"golden_id": "G2", "last_event_time": 1})], [],
                   lease_owner="a"))
    run(store.release(["G1"], "a"))
    assert run(store.lease(["G1"], "b", 60_000)) == []  # a stalled, b has it now
    changed = GoldenState("G1", {"crm:1": {"record": {"event_time": 2}}}, {"golden_id": "G1", "last_event_time": 2})
    with pytest.raises(LeaseLost):
        run(store.save([changed], ["G2"], lease_owner="a"))
    assert run(store.golden("G1"))["last_event_time"] == 1  # as b found it
    assert run(store.golden("G2")) is None  # a still held G2: its deletion went through
    run(store.save([changed], [], lease_owner="b"))
    assert run(store.golden("G1"))["last_event_time"] == 2
    run(store.save([first], []))  # no lease named (the staged engine): not fenced
    assert run(store.golden("G1"))["last_event_time"] == 1


def test_a_slow_delivery_keeps_the_pass_alive_and_a_fast_one_does_not():
    """hub.runner.deliver renews what a pass holds while the broker has not acknowledged its outputs."""
    from hub.records import OutMessage
    from hub.runner import deliver
    from hub.stages import StageOutput

    class SlowSink:
        def __init__(self, acknowledge_after_s: float):
            self.until = time.monotonic() + acknowledge_after_s

        def add(self, message):
            pass

        def pending(self) -> int:
            return int(time.monotonic() < self.until)

        def poll(self):
            pass

        def flush(self, timeout_s=0):
            pass

    kept: list[float] = []

    async def keep_alive():
        kept.append(time.monotonic())
    output = StageOutput([OutMessage("customer.golden", b"G1", b"v")], keep_alive=keep_alive)
    run(deliver(SlowSink(0.35), output, keep_alive_s=0.1))
    assert 2 <= len(kept) <= 4
    kept.clear()
    run(deliver(SlowSink(0), output, keep_alive_s=0.1))
    assert kept == []


def test_a_master_pass_renews_its_leases_while_delivering_and_fails_once_they_are_taken():
    from hub.ports import LeaseLost

    store = MemoryStore()
    linked = _linked_batch()
    gids = sorted({m.key.decode() for m in linked})
    master = MasterStage(PIPELINE, store, store, store, SECRET, store, leases=store, lease_owner="mine",
                         lease_ttl_ms=400)
    output = run(master.process(linked, now_ms=NOW))
    for _ in range(3):  # a delivery of 0.6 s: three renewals keep what lapses after 0.4 s
        time.sleep(0.2)
        run(output.keep_alive())
    assert run(store.lease(gids, "theirs", 60_000)) == gids  # still ours: every one refused
    time.sleep(0.5)  # stalled past the lease: another pass takes a record
    assert run(store.lease(gids[:1], "theirs", 60_000)) == []
    with pytest.raises(LeaseLost):
        run(output.keep_alive())


def test_a_chain_keeps_every_step_alive():
    from hub.engine import Step
    from hub.records import InMessage, OutMessage
    from hub.stages import StageOutput

    kept = []

    class Holding:
        def __init__(self, name):
            self.name = name

        async def process(self, batch):
            async def keep_alive():
                kept.append(self.name)
            return StageOutput([OutMessage("next", m.key, m.value) for m in batch], keep_alive=keep_alive)

    chain = Chain([Step("master", Holding("master"), True, "next"), Step("syndicate", Holding("syndicate"))])
    output = run(chain.process([InMessage("raw", 0, 0, b"k", b"v")]))
    run(output.keep_alive())
    assert kept == ["syndicate", "master"]


def test_a_chain_step_takes_the_topics_it_reads_from_the_batch_or_handed_on_in_order():
    """The hot path's consent step reads its own topic of the batch and hands its recomputes to the master
    step beside the match step's links, in the order they came; a message no step reads fails the pass."""
    from hub.engine import Step as S
    from hub.records import InMessage, OutMessage
    from hub.stages import StageOutput

    seen: dict[str, list] = {}

    class Echo:
        def __init__(self, name, topic):
            self.name, self.topic = name, topic

        async def process(self, batch):
            seen.setdefault(self.name, []).append([(m.topic, m.key) for m in batch])
            return StageOutput([OutMessage(self.topic, m.key, b"") for m in batch])

    chain = Chain([S("consent", Echo("consent", "linked"), True, "linked", reads=("consent",)),
                   S("ingest", Echo("ingest", "canonical"), True, "canonical", reads=("raw.a", "raw.b")),
                   S("match", Echo("match", "linked"), True, "linked", reads=("canonical",)),
                   S("master", Echo("master", "golden"), True, reads=("linked",))])
    batch = [InMessage(t, 0, i, k, b"") for i, (t, k) in
             enumerate([("raw.b", b"r1"), ("consent", b"c1"), ("raw.a", b"r2"), ("consent", b"c2")])]
    output = run(chain.process(batch))
    assert seen == {"consent": [[("consent", b"c1"), ("consent", b"c2")]],
                    "ingest": [[("raw.b", b"r1"), ("raw.a", b"r2")]],
                    "match": [[("canonical", b"r1"), ("canonical", b"r2")]],
                    "master": [[("linked", b"c1"), ("linked", b"c2"), ("linked", b"r1"), ("linked", b"r2")]]}
    assert [m.key for m in output.messages] == [b"c1", b"c2", b"r1", b"r2"]
    seen.clear()
    run(chain.process([InMessage("consent", 0, 0, b"c3", b"")]))  # the source steps have nothing: skipped
    assert seen == {"consent": [[("consent", b"c3")]], "master": [[("linked", b"c3")]]}
    with pytest.raises(RuntimeError, match="no step of the pass reads"):
        run(chain.process([InMessage("raw.a", 0, 0, b"r", b""), InMessage("survey", 0, 1, b"s", b"")]))


def test_a_pass_refused_a_lease_whose_holder_never_gives_it_back_takes_it_once_it_lapses(leases):
    """In memory and on Redis: a holder that died says nothing; the refused pass tries again every
    LEASE_WAIT_MAX_S and goes on once the lease has lapsed."""
    from hub import metrics
    from hub.stages.master import LEASE_WAIT_MAX_S

    store = leases
    linked, gids, master = _leased_master(store)
    timed_out = metrics.REGISTRY.get_sample_value("hub_golden_lease_wait_ends_total", {"outcome": "timed_out"}) or 0
    assert run(store.lease(gids[:1], "dead", 600)) == []

    async def scenario():
        started = time.monotonic()
        output = await asyncio.wait_for(master.process(linked, now_ms=NOW), 10)
        assert time.monotonic() - started >= 0.5  # not before the lease lapsed
        assert any(m.topic == PIPELINE.topics.golden for m in output.messages)
        await output.after_delivery()

    asyncio.run(scenario())
    waited = metrics.REGISTRY.get_sample_value("hub_golden_lease_wait_ends_total", {"outcome": "timed_out"}) - timed_out
    assert 0.6 / LEASE_WAIT_MAX_S / 3 <= waited <= 0.6 / LEASE_WAIT_MAX_S + 2  # tried again every wait, not spinning


def test_a_release_wakes_the_pass_it_refused_and_only_that_signals(leases):
    """In memory and on Redis: a refusal notes the waiter in the same step, so the holder's release, however
    soon, wakes it (at once if the release came first); a release nobody waits for, or by one who does not
    hold the lease, leaves no signal behind; a wait nobody answers ends at its timeout."""
    def keys() -> list[str]:
        if isinstance(leases, MemoryStore):
            return []
        return sorted(k.decode() for k in leases.client.scan_iter(match="hub:lease*"))

    async def scenario():
        assert await leases.lease(["G1", "G2"], "theirs", 60_000) == []
        await leases.release(["G2"], "theirs")  # nobody waits for G2
        assert await leases.lease(["G1"], "mine", 60_000) == ["G1"]
        if not isinstance(leases, MemoryStore):
            assert keys() == ["hub:lease:{G1}", "hub:leasew:{G1}"]  # held, and someone waits
        assert await leases.wait_released("G1", 0.05) is False  # still held
        await leases.release(["G1"], "someone else")  # not theirs to give back: no signal
        assert await leases.wait_released("G1", 0.05) is False
        waiting = asyncio.ensure_future(leases.wait_released("G1", 30))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await leases.release(["G1"], "theirs")
        assert await asyncio.wait_for(waiting, 10) is True  # woken, not waited out (30 s)
        assert await leases.lease(["G1"], "mine", 60_000) == []
        # refused, then released before the wait begins: the wait ends at once
        assert await leases.lease(["G1"], "theirs", 60_000) == ["G1"]
        await leases.release(["G1"], "mine")
        assert await leases.wait_released("G1", 30) is True
        # two owners refused: the release wakes both
        assert await leases.lease(["G3"], "theirs", 60_000) == []
        assert await leases.lease(["G3"], "mine", 60_000) == ["G3"]
        assert await leases.lease(["G3"], "other", 60_000) == ["G3"]
        both = asyncio.gather(leases.wait_released("G3", 30), leases.wait_released("G3", 30))
        await asyncio.sleep(0.05)
        await leases.release(["G3"], "theirs")
        assert await asyncio.wait_for(both, 10) == [True, True]

    asyncio.run(scenario())
    assert keys() == []  # every lease given back, every waiter answered: no flag, no signal left


def test_a_wait_for_a_release_that_cannot_reach_redis_sleeps_its_timeout_instead(redis_store, monkeypatch):
    """Redis away while a refused pass waits: the wait is no reason to fail the pass (its next lease call
    meets Redis anyway), so it sleeps what it would have waited."""
    import redis

    def away(*args, **kwargs):
        raise redis.ConnectionError("Redis went away")
    run(redis_store.wait_released("G1", 0.001))  # makes the blocking client
    monkeypatch.setattr(redis_store._blocking, "blpop", away)
    started = time.monotonic()
    assert run(redis_store.wait_released("G1", 0.2)) is False
    assert time.monotonic() - started >= 0.2


def test_a_master_pass_refused_a_lease_goes_on_when_the_holder_releases_not_after_its_wait_bound(leases, monkeypatch):
    """The pass waits in Redis for the release (BLPOP) rather than sleeping: with a wait bound of a minute, it
    still delivers within seconds of the holder's release."""
    from hub import metrics
    from hub.stages import master as master_module

    monkeypatch.setattr(master_module, "LEASE_WAIT_MAX_S", 60.0)
    store = leases
    linked, gids, master = _leased_master(store)
    assert run(store.lease(gids[:1], "theirs", 60_000)) == []
    ended = metrics.REGISTRY.get_sample_value("hub_golden_lease_wait_ends_total", {"outcome": "released"}) or 0.0

    async def scenario():
        task = asyncio.ensure_future(master.process(linked, now_ms=NOW))
        await asyncio.sleep(0.3)
        assert not task.done()
        await store.release(gids, "theirs")
        output = await asyncio.wait_for(task, 10)
        assert any(m.topic == PIPELINE.topics.golden for m in output.messages)
        await output.after_delivery()

    asyncio.run(scenario())
    assert metrics.REGISTRY.get_sample_value("hub_golden_lease_wait_ends_total", {"outcome": "released"}) == ended + 1


def test_the_syndicate_step_takes_the_state_the_master_read_ahead_for_the_records_it_is_handed():
    """The master step reads the syndication state of the golden records it hands on with its save (one round
    trip fewer a pass); the syndicate step takes it only for those very records, and reads for itself
    otherwise (a read ahead left by a pass that failed after its master step is never taken)."""
    from hub.records import InMessage
    from hub.stages.syndicate import SyndicateStage

    store = MemoryStore()
    calls = {"now": 0, "ahead": 0}
    plain, soon = store.load_syndication, store.load_syndication_soon

    async def now(golden_ids):
        calls["now"] += 1
        return await plain(golden_ids)

    async def ahead(golden_ids):
        calls["ahead"] += 1
        return await soon(golden_ids)
    store.load_syndication, store.load_syndication_soon = now, ahead
    assert asyncio.run(_replay(store, _stream(), "fused"))
    assert calls["ahead"] > 10 and calls["now"] == 0

    syndicate = SyndicateStage(PIPELINE, store)
    tombstone = InMessage(PIPELINE.topics.golden, 0, 0, b"G1", None)
    calls.update(now=0, ahead=0)

    async def pass_with(handed):
        await syndicate.read_ahead(handed)
        await syndicate.process([tombstone])
    asyncio.run(pass_with({"G1": None}))
    assert calls == {"now": 0, "ahead": 1}
    asyncio.run(pass_with({"G1": {"golden_id": "G1"}}))  # another record than the one handed on
    asyncio.run(pass_with({"G2": None}))
    assert calls == {"now": 2, "ahead": 3}
    asyncio.run(syndicate.process([tombstone]))  # nothing read ahead for this pass: the last one was taken
    assert calls == {"now": 3, "ahead": 3}


@pytest.mark.parametrize("store_kind", ["memory", "redis"])
def test_a_master_pass_learns_the_folds_it_makes_in_the_read_of_where_its_golden_ids_stand(store_kind, request):
    """The merges a pass folds in, however deep (a merged-away record that had absorbed others), come with its
    first read of where its golden ids stand: no read of deeper folds of its own (one round trip fewer)."""
    if store_kind == "memory":
        store = MemoryStore()
    else:
        store = request.getfixturevalue("redis_store")
        store.client.flushdb()
    seen = {"folds": 0, "apart": 0, "reading": False}
    plain_read, plain_pending = store.survivors_and_folds, store.pending_folds

    async def read(golden_ids):
        seen["reading"] = True  # the in-memory index reads the survivors' own folds with pending_folds
        try:
            survivors, folds, below = await plain_read(golden_ids)
        finally:
            seen["reading"] = False
        seen["folds"] += bool(folds)
        return survivors, folds, below

    async def pending(golden_ids):
        seen["apart"] += not seen["reading"]
        return await plain_pending(golden_ids)
    store.survivors_and_folds, store.pending_folds = read, pending
    assert asyncio.run(_replay(store, _stream(), "fused"))
    assert seen["folds"] > 0 and seen["apart"] == 0
