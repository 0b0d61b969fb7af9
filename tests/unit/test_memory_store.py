"""hub.store.memory_store.MemoryStore beside RedisStore (an embedded server):
the whole pipeline (hub.dataflow's stages, driven as `hub replay` drives
them) over one generated stream writes the same messages, byte for byte and
in the same order, on either store; crafted cases pin each port's own
behaviour (latest statement per slot, redelivery, schedules, tombstones of
the syndication state) on both."""

from __future__ import annotations

import asyncio
import time

from hub.config import load_pipeline
from hub.dataflow import stage_runners
from hub.demo import encode_event
from hub.ports import GoldenState
from hub.quality_tally import RedisTallyStore, days_back
from hub.records import InMessage
from hub.replay import Replay
from hub.schemas import ERASURE_REQUEST, STEWARD_ACTION, SURVEY_RESPONSE, codec
from hub.store.memory_store import MemoryStore
from hub.testing.generator import generate
from test_memory_index import run

SECRET = b"memory-store-test-secret"
NOW = 1_780_000_000_000  # the clock both runs see (time.time is frozen here): audit times, consent verdicts
START = NOW - 20 * 86_400_000


class ListSink:
    """Acknowledges everything at once; keeps every record in the order it was flushed."""

    def __init__(self):
        self.records = []
        self._queued = []

    def setup(self) -> None:
        pass

    def add(self, record) -> None:
        self._queued.append(record)

    def pending(self) -> int:
        return 0

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float = 0) -> None:
        self.records += self._queued
        self._queued = []


def _message(topic: str, key: bytes, value: bytes, at: int) -> InMessage:
    return InMessage(topic, 0, at, key, value, at)


def _stream(persons: int = 120, seed: int = 23) -> list[InMessage]:
    """Generated source and consent events (upserts, updates, deletes, invalid
    payloads), with survey answers, a steward's split and link of one
    person's records and two erasures woven in."""
    events = generate(persons, seed=seed, start_ms=START)
    messages = [_message(e.topic, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value), START + i)
                for i, e in enumerate(events)]
    by_person: dict[str, list[str]] = {}
    for e in events:
        if e.person_id and e.topic.startswith("raw.") and e.key.decode() not in by_person.get(e.person_id, []):
            by_person.setdefault(e.person_id, []).append(e.key.decode())
    several = [keys for keys in by_person.values() if len(keys) >= 2]
    assert len(several) >= 3
    (a, b, *_), (c, *_), (d, *_) = several[0], several[1], several[2]
    steward, erasure, survey = codec(STEWARD_ACTION), codec(ERASURE_REQUEST), codec(SURVEY_RESPONSE)

    def action(kind: str, member: str, others: list[str]) -> bytes:
        return steward.encode({"action": kind, "member": member, "others": others, "actor": "steward-1",
                               "reason": None, "at": NOW})

    def answer(member: str, score: int, at: int) -> bytes:
        source, source_id = member.split(":", 1)
        return survey.encode({"source": source, "source_id": source_id, "survey_id": "nps-2026", "score": score,
                              "responded_at": at, "channel": None})

    def erase(member: str | None, golden_id: str | None = None) -> bytes:
        source, source_id = member.split(":", 1) if member else (None, None)
        return erasure.encode({"source": source, "source_id": source_id, "golden_id": golden_id,
                               "requester": "dpo", "requested_at": NOW})

    n = len(messages)
    woven = [
        (n // 3, _message("survey.events", a.encode(), answer(a, 9, START + 5), NOW)),
        (n // 3, _message("survey.events", c.encode(), answer(c, 4, START + 6), NOW)),
        (n // 3, _message("survey.events", a.encode(), answer(a, 2, START + 1), NOW)),  # older: changes nothing
        (n // 2, _message("steward.actions", a.encode(), action("split", a, [b]), NOW)),
        (2 * n // 3, _message("steward.actions", a.encode(), action("link", a, [b]), NOW)),
        (2 * n // 3, _message("erasure.requests", d.encode(), erase(d), NOW)),
        (3 * n // 4, _message("erasure.requests", b"nobody", erase("crm:nobody"), NOW)),
        (3 * n // 4, _message("survey.events", c.encode(), answer(c, 4, START + 6), NOW)),  # the same again
    ]
    for position, message in sorted(woven, key=lambda w: w[0], reverse=True):
        messages.insert(position, message)
    return messages


async def _replay(store, messages: list[InMessage], batch: int) -> tuple[list, dict]:
    """The stream through every stage (`hub replay`'s cascade), then its
    second half again (a redelivery: events older than a deletion come after
    it); every message written, and what the timers and reports read back."""
    pipeline = load_pipeline(None)
    sink = ListSink()
    driver = Replay(pipeline, stage_runners(pipeline, store, sink, SECRET, engine="staged"), sink, batch, "staged")
    await driver.run(messages)
    await driver.run(messages[len(messages) // 2:])
    written = [(r.topic, r.key, r.value, list(r.headers)) for r in sink.records]
    tallies = store.quality_tallies if isinstance(store, MemoryStore) else RedisTallyStore(store.client)
    later = NOW + 10 * 365 * 86_400_000
    state = {"golden_count": await store.golden_count(),
             "consent_due": await store.take_due(later, 100_000, "consent"),
             "decay_due": await store.take_due(later, 100_000, "decay"),
             "inactive": await store.inactive(later, 100_000),
             "tallies": tallies.read(days_back(NOW, 2))}
    return written, state


def test_the_pipeline_writes_the_same_messages_on_memory_and_redis(redis_store, monkeypatch):
    """Every message every stage writes (topic, key, value bytes, headers), in
    order, is the same whichever store holds the state: golden records, target
    slices and their tombstones, audit events with their decisions, dead
    letters, link instructions; and so are the schedules, the retention
    index and the quality counters left behind. The clock is frozen, so
    audit times and consent verdicts are the same in both runs."""
    monkeypatch.setattr(time, "time", lambda: NOW / 1000)
    messages = _stream()
    on_redis = asyncio.run(_replay(redis_store, messages, batch=60))
    on_memory = asyncio.run(_replay(MemoryStore(), messages, batch=60))
    written, state = on_redis
    topics = {t for t, *_ in written}
    names = load_pipeline(None).topics
    # the stream reaches every kind of output it should
    assert {names.golden, names.audit, names.linked, names.canonical} <= topics
    assert any(t.startswith("dlq.") for t in topics) and any(t.startswith("mastered.") for t in topics)
    assert any(value is None and t.startswith("mastered.") for t, _, value, _ in written)  # tombstones to targets
    assert any(("hub.reason", b"erased") in headers for *_, headers in written)
    assert any(b"steward" in (value or b"") and t == names.audit for t, _, value, _ in written)
    assert state["golden_count"] > 50 and state["decay_due"] and state["tallies"]
    for i, (mine, theirs) in enumerate(zip(on_memory[0], written)):
        assert mine == theirs, f"message {i} differs"
    assert len(on_memory[0]) == len(written)
    assert on_memory[1] == state


def both(redis_store):
    return {"memory": MemoryStore(), "redis": redis_store}


def test_latest_statement_per_slot_and_redelivery(redis_store):
    granted = {"purpose": "marketing", "channel": "email", "status": "granted", "event_time": 2000}
    older = {**granted, "status": "denied", "event_time": 1000}
    same_time = {**granted, "status": "denied"}
    sms = {**granted, "channel": "sms"}
    for name, store in both(redis_store).items():
        assert run(store.put({"crm:1": [granted], "crm:2": []})) == {"crm:1": True}, name
        assert run(store.put({"crm:1": [older]})) == {"crm:1": False}, name  # older: nothing changes
        assert run(store.put({"crm:1": [granted]})) == {"crm:1": True}, name  # a redelivery counts
        run(store.put({"crm:1": [same_time, sms]}))  # equal times: the greater digest wins, on both
        held = run(store.get(["crm:1", "crm:9"]))
        assert held["crm:9"] == [] and len(held["crm:1"]) == 2, name
        answer = {"survey_id": "nps", "score": 7, "responded_at": 5}
        assert run(store.put_surveys({"crm:1": [answer]})) == {"crm:1": True}, name
        assert run(store.put_surveys({"crm:1": [{**answer, "score": 1, "responded_at": 4}]})) == {"crm:1": False}
        assert run(store.get_surveys(["crm:1", "crm:9"])) == {"crm:1": [answer]}, name
        run(store.forget(["crm:1"]))
        run(store.forget_surveys(["crm:1"]))
        assert run(store.get(["crm:1"])) == {"crm:1": []} and run(store.get_surveys(["crm:1"])) == {}, name
    memory, redis_ = both(redis_store).values()
    run(memory.put({"crm:1": [granted, same_time, sms]}))
    run(redis_.put({"crm:1": [granted, same_time, sms]}))
    assert run(memory.get(["crm:1"])) == run(redis_.get(["crm:1"]))


def test_golden_store_syndication_and_schedules(redis_store):
    results = {}
    for name, store in both(redis_store).items():
        golden = {"golden_id": "G1", "last_event_time": 50, "b": 1, "a": [2]}
        state = GoldenState("G1", {"crm:1": {"record": {"x": 1}}, "pos:2": {"record": {"y": (1, 2)}}}, golden, b"au")
        run(store.save([state, GoldenState("G2", {"crm:3": {}}, {**golden, "golden_id": "G2",
                                                                     "last_event_time": 40})], [],
                       {"G1": (set(), {"k1", "k2"}), "G2": (set(), {"k1"})}))
        run(store.mark_flagged(["G2"]))
        loaded = run(store.load(["G1", "G3"]))
        run(store.save([GoldenState("G2", {}, None)], ["G2"], {"G2": ({"k1"}, set())}))
        run(store.schedule({"G1": 100, "G2": 100, "G0": 300}, "consent"))
        run(store.schedule({"G2": None}, "consent"))
        run(store.save_syndication({"G1": {"crm": ("K1", "h1"), "pos|sending": ("K2", "")}}))
        first = run(store.load_syndication(["G1", "G2"]))
        run(store.save_syndication({"G1": {"crm": None}, "G2": {}}))
        results[name] = (
            {g: (s.contributions, s.golden, s.last_audit) for g, s in loaded.items()},
            run(store.golden("G1")), run(store.golden("G2")), run(store.golden_count()),
            run(store.inactive(100)), store.lookup(index_key="k1"), store.lookup(golden_id="G2"),
            run(store.take_due(200)), run(store.take_due(200)), run(store.take_due(400)), run(store.take_due(400)),
            first, run(store.load_syndication(["G1", "G2"])))
    assert results["memory"] == results["redis"]
    (loaded, *_) = results["memory"]
    assert loaded["G1"][0]["pos:2"] == {"record": {"y": [1, 2]}}  # read back as JSON, as from Redis
    assert loaded["G3"] == ({}, None, None)
