"""Stage-level crash windows, in-process against a real Redis: outputs lost
after the state was written (a crash between Redis and Kafka), then the
input redelivered. The merge still reaches the golden store, and tombstones
are sent again."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.config import load_pipeline
from hub.records import InMessage
from hub.schemas import CUSTOMER_EVENT, codec
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage

NOW = int(time.time() * 1000) - 60_000
ANNA = {"given_name": "Annabel", "family_name": "Smithson"}


def raw(source: str, sid: str, at: int, **fields) -> InMessage:
    value = codec(CUSTOMER_EVENT).encode({"source": source, "source_id": sid, "event_time": at, **fields})
    return InMessage(f"raw.{source}", 0, at, f"{source}:{sid}".encode(), value, NOW)


@pytest.fixture
def stages(tmp_path):
    from hub.connectors.embedded import EmbeddedRedis
    from hub.connectors.redis_store import RedisStore

    redis = EmbeddedRedis(tmp_path).start()
    store = RedisStore.from_url(redis.url)
    pipeline = load_pipeline(None)
    yield IngestStage(pipeline), MatchStage(pipeline, store, b"k"), MasterStage(pipeline, store, store, store, b"k", store), store
    redis.stop()


def test_a_merge_whose_linked_record_was_lost_still_reaches_the_golden_store(stages):
    ingest, match, master, store = stages

    async def flow(messages, keep_linked=True):
        canonical = [InMessage(m.topic, 0, 0, m.key, m.value, NOW) for m in ingest.process(messages, NOW).messages]
        linked = [InMessage(m.topic, 0, 0, m.key, m.value, NOW) for m in (await match.process(canonical, NOW)).messages
                  if m.topic == "customer.linked"]
        if keep_linked:
            return await master.process(linked, NOW)
        return None

    async def scenario():
        # two sparse records found two golden records; a third links both (a merge)
        await flow([raw("crm", "C1", NOW, **ANNA, emails=[{"address": "anna@x.example"}])])
        await flow([raw("pos", "P1", NOW + 1, **ANNA, phones=[{"number": "07911 123456"}])])
        gids = {g for g in [(await store.decision(m))[0] for m in ("crm:C1", "pos:P1")]}
        bridge = raw("ecommerce", "E1", NOW + 2, **ANNA, emails=[{"address": "anna@x.example"}],
                     phones=[{"number": "07911 123456"}])
        await flow([bridge], keep_linked=False)  # crash: the index merged, the linked record never arrived
        out = await flow([bridge])  # redelivered: already linked, so the decision is "existing"
        return gids, out

    gids, out = asyncio.run(scenario())
    survivor = asyncio.run(store.decision("ecommerce:E1"))[0]
    golden = asyncio.run(store.golden(survivor))
    assert len(gids) == 2  # names alone never merge: two golden records until the bridge
    assert golden["members"] == ["crm:C1", "ecommerce:E1", "pos:P1"]
    (gone,) = gids - {survivor}
    assert asyncio.run(store.golden(gone)) is None
    assert any(m.key == gone.encode() and m.value is None for m in out.messages)  # tombstone on the topic
