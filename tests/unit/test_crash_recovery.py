"""Stage-level crash windows, in-process: outputs lost after the state was
written (a crash between Redis and Kafka), then the input redelivered. The
merge still reaches the golden store, and tombstones are sent again. The
state is held in memory (hub.store.memory_store.MemoryStore, which the stages
see as they see Redis: tests/unit/test_memory_store.py); the crash windows
inside Redis are tests/unit/test_crash_windows.py's."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.config import load_pipeline
from hub.records import InMessage
from hub.schemas import CUSTOMER_EVENT, codec
from hub.stages import settled
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage
from hub.store.memory_store import MemoryStore

NOW = int(time.time() * 1000) - 60_000
ANNA = {"given_name": "Annabel", "family_name": "Smithson"}


def raw(source: str, sid: str, at: int, **fields) -> InMessage:
    value = codec(CUSTOMER_EVENT).encode({"source": source, "source_id": sid, "event_time": at, **fields})
    return InMessage(f"raw.{source}", 0, at, f"{source}:{sid}".encode(), value, NOW)


def delivered(output, topic: str | None = None) -> list[InMessage]:
    """A stage's outputs as the next stage reads them (those on `topic`, when given)."""
    return [InMessage(m.topic, 0, 0, m.key, m.value, NOW) for m in output.messages if topic in (None, m.topic)]


async def linked(ingest, match, messages: list[InMessage]) -> list[InMessage]:
    """Source events through ingest and match: what the master reads."""
    return delivered(await match.process(delivered(ingest.process(messages, NOW)), NOW), "customer.linked")


@pytest.fixture
def stages():
    store = MemoryStore()
    pipeline = load_pipeline(None)
    return IngestStage(pipeline), MatchStage(pipeline, store, b"k"), MasterStage(pipeline, store, store, store, b"k", store), store


def test_a_merge_whose_linked_record_was_lost_still_reaches_the_golden_store(stages):
    ingest, match, master, store = stages

    async def flow(messages, keep_linked=True):
        found = await linked(ingest, match, messages)
        return await settled(master.process(found, NOW)) if keep_linked else None

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


def test_an_event_older_than_a_deletion_does_not_bring_the_record_back(stages):
    """The deletion reaches the master first (linked under the golden record
    it merged into, on another partition, or redelivered after a crash): the
    older event, arriving after it, changes nothing."""
    ingest, match, master, store = stages

    async def scenario():
        upsert = await linked(ingest, match, [raw("crm", "C1", NOW, **ANNA, emails=[{"address": "anna@x.example"}])])
        deletion = await linked(ingest, match, [raw("crm", "C1", NOW + 1000, op="delete")])
        await settled(master.process(deletion, NOW))
        return (await settled(master.process(upsert, NOW))).messages

    out = asyncio.run(scenario())
    assert asyncio.run(store.golden_count()) == 0
    assert all(m.value is None for m in out if m.topic == "customer.golden")


def test_a_merge_arriving_after_a_deletion_does_not_bring_the_deleted_record_back(stages):
    """A merge's linked record waits on one partition while the deletions of
    both merged records, linked under the survivor, are mastered first (the
    index's pending fold brings the merged-away record in before the deletion
    applies): the merge, arriving last, brings back neither."""
    ingest, match, master, store = stages

    async def scenario():
        await settled(master.process(await linked(ingest, match, [raw("crm", "C1", NOW, **ANNA, emails=[{"address": "anna@x.example"}])]), NOW))
        await settled(master.process(await linked(ingest, match, [raw("pos", "P1", NOW + 1, **ANNA, phones=[{"number": "07911 123456"}])]), NOW))
        merge = await linked(ingest, match, [raw("ecommerce", "E1", NOW + 2, **ANNA, emails=[{"address": "anna@x.example"}],
                                  phones=[{"number": "07911 123456"}])])
        deletions = [await linked(ingest, match, [raw(source, sid, NOW + 1000, op="delete")]) for source, sid in
                     (("crm", "C1"), ("pos", "P1"))]
        for deletion in deletions:  # mastered before the merge
            await settled(master.process(deletion, NOW))
        await settled(master.process(merge, NOW))

    asyncio.run(scenario())
    survivor = asyncio.run(store.decision("ecommerce:E1"))[0]
    golden = asyncio.run(store.golden(survivor))
    assert golden["members"] == ["ecommerce:E1"]


def test_a_deletion_whose_linked_record_was_lost_still_reaches_the_golden_store(stages):
    """The match stage unlinked the deleted record, then the worker died before
    its linked record was delivered: redelivered, the deletion is no longer in
    the index, and must still reach the master."""
    ingest, match, master, store = stages

    async def scenario():
        await settled(master.process(await linked(ingest, match, [raw("crm", "C1", NOW, **ANNA,
                                                            emails=[{"address": "anna@x.example"}])]), NOW))
        deletion = delivered(ingest.process([raw("crm", "C1", NOW + 1000, op="delete")], NOW))
        await match.process(deletion, NOW)  # crash: the index changed, the linked record never arrived
        redelivered = delivered(await match.process(deletion, NOW), "customer.linked")
        await settled(master.process(redelivered, NOW))
        return redelivered

    redelivered = asyncio.run(scenario())
    assert len(redelivered) == 1
    assert asyncio.run(store.golden_count()) == 0
