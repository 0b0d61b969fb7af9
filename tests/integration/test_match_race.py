"""Two workers matching records of the same person at the same moment never
create two golden records: the identity index (one atomic Lua call per batch,
with versions on blocking keys) is the point of agreement."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from hub.config import load_pipeline
from hub.records import InMessage
from hub.schemas import CANONICAL, CUSTOMER_EVENT, codec
from hub.stages.match import MatchStage
from hub.standardise import standardise_and_score
from hub.store.redis import RedisStore
from hub.testing.harness import Feeder, LocalHub, Watcher, open_goldens, wait_caught_up, worker_input_topics

pytestmark = pytest.mark.integration

def canonical(source: str, source_id: str, email: str, given="Maria", family="Lopez") -> InMessage:
    record, quality = standardise_and_score({
        "source": source, "source_id": source_id, "op": "upsert", "record_type": "person",
        "event_time": int(time.time() * 1000), "given_name": given, "family_name": family,
        "birth_date": "1979-09-09", "emails": [{"address": email}], "phones": [], "addresses": []})
    value = codec(CANONICAL).encode({"record": record, "quality": quality, "ingested_at": 0,
                                     "origin": {"topic": "t", "partition": 0, "offset": 0, "produced_at": None}})
    return InMessage("customer.canonical", 0, 0, f"{source}:{source_id}".encode(), value)


class ReadThenWait:
    """An index whose readers all finish reading before any of them may link:
    the worst interleaving of two workers, made certain."""

    def __init__(self, store: RedisStore, barrier: asyncio.Barrier):
        self.store, self.barrier, self.waited = store, barrier, False

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def link(self, requests):
        if not self.waited:
            self.waited = True
            await self.barrier.wait()
        return await self.store.link(requests)


GIVEN = ("Maria", "Jonas", "Aisha", "Pedro", "Ingrid", "Tomasz", "Keiko", "Oliver", "Fatima", "Lars")
FAMILY_A = ("Bran", "Cort", "Dal", "Fenn", "Gar", "Holm", "Kess", "Lind", "Morr", "Nyst", "Orr", "Pell", "Quist",
            "Rask", "Sund")
FAMILY_B = ("ley", "ton", "berg", "wick", "ard")


def _person(i: int) -> tuple[str, str, str]:
    """Distinct people: a given name, a surname unlike the others', an unrelated e-mail."""
    import hashlib

    family = FAMILY_A[i % 15] + FAMILY_B[(i // 15) % 5] + ("" if i < 75 else "s")
    email = hashlib.blake2s(str(i).encode(), digest_size=6).hexdigest() + "@gmail.com"
    return GIVEN[(i * 7) % 10], family, email


def _linked_golden_ids(output) -> set[str]:
    return {m.key.decode() for m in output.messages if m.topic == "customer.linked"}


def test_two_matchers_deciding_at_once_agree_on_one_golden_record(shared_redis):
    race_two_matchers(shared_redis)


@pytest.mark.parametrize("engine", ["staged", "fused"])
def test_two_worker_processes_give_one_golden_record_per_person(shared_redis, tmp_path, engine):
    race_two_worker_processes(shared_redis, tmp_path, engine)


def race_two_matchers(redis_url: str) -> None:
    """Both matchers read before either links (also run on a Redis Cluster: test_redis_cluster.py)."""
    from hub import metrics

    pipeline = load_pipeline(None)
    conflicts_before = metrics.MATCH_CONFLICTS._value.get()

    async def race():
        barrier = asyncio.Barrier(2)
        stores = [RedisStore.from_url(redis_url) for _ in range(2)]
        stages = [MatchStage(pipeline, ReadThenWait(store, barrier), b"k") for store in stores]
        a, b = await asyncio.gather(
            stages[0].process([canonical("crm", "1", "maria.lopez@gmail.com")]),
            stages[1].process([canonical("pos", "1", "maria.lopez@gmail.com", given="MARIA")]))
        entries = await stores[0].members(["crm:1", "pos:1"])
        for store in stores:
            await store.close()
        return a, b, entries

    a, b, entries = asyncio.run(race())
    assert entries["crm:1"].golden_id == entries["pos:1"].golden_id
    assert _linked_golden_ids(a) == _linked_golden_ids(b) == {entries["crm:1"].golden_id}
    assert metrics.MATCH_CONFLICTS._value.get() - conflicts_before >= 1  # the second one had to decide again


def race_two_worker_processes(redis_url: str, tmp_path, engine: str = "staged") -> None:
    """Real workers on the same topics: each person's records arrive on
    different source topics at the same moment and land on different workers
    (with the fused engine, each worker masters what it matched: two can meet
    on one golden record, and its lease keeps them apart)."""
    pipeline = load_pipeline(None)
    persons = 150
    with LocalHub(pipeline, tmp_path, redis_url=redis_url) as hub:
        workers = [hub.worker(env={"HUB_ENGINE": engine}), hub.worker(env={"HUB_ENGINE": engine})]
        time.sleep(4)  # both members of the group assigned before the burst
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        encode = codec(CUSTOMER_EVENT).encode
        now = int(time.time() * 1000)
        for i in range(persons):
            given, family, email = _person(i)
            for source, name in (("crm", given), ("pos", given.upper()), ("ecommerce", given)):
                feeder.send(f"raw.{source}", f"{source}:{i}".encode(), encode({
                    "source": source, "source_id": str(i), "event_time": now, "given_name": name,
                    "family_name": family, "emails": [{"address": email}]}))
        feeder.flush()
        view = watcher.wait_until(lambda v: len(v.live("mastered.pos")) >= persons, timeout_s=90, quiet_s=0)
        wait_caught_up(hub.bootstrap, "hub", worker_input_topics(pipeline, engine), 90)
        view = watcher.wait_until(lambda v: True, timeout_s=30, quiet_s=3)
        golden = list(open_goldens(hub, view.live("customer.golden")).values())
        by_person = {}
        for record in golden:
            by_person.setdefault(record["emails"][0]["address"], []).append(record["golden_id"])
        duplicates = {email: ids for email, ids in by_person.items() if len(ids) > 1}
        assert not duplicates
        assert len(golden) == persons and all(len(g["members"]) == 3 for g in golden)
        assert len(view.live("mastered.pos")) == persons
        pos = [orjson.loads(v) for v in view.live("mastered.pos").values()]
        assert {p["golden_id"] for p in pos} == {g["golden_id"] for g in golden}
        conflicts = sum(w.metric("hub_match_conflicts_total") for w in workers)
        matched = [w.metric("hub_stage_records_total", stage="match") for w in workers]
        print(f"\nrace: records matched per worker {matched}, batches re-decided after a conflict {conflicts}")
        assert all(m > 0 for m in matched)  # both workers took part
        watcher.close()
