"""Deletions against a real Redis, through the ingest, match and master
stages: a source record deleted by its source stays deleted for every older
event, and an older deletion never removes a newer record, in any order."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from hub.config import load_pipeline
from hub.records import InMessage
from hub.schemas import CUSTOMER_EVENT, GOLDEN, codec
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage
from hub.store.redis import RedisStore

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000
ANNA = {"source": "crm", "source_id": "C1", "given_name": "Anna", "family_name": "Smith",
        "emails": [{"address": "anna@example.com"}]}
UPSERT_1 = {**ANNA, "event_time": T0}
DELETE_2 = {"source": "crm", "source_id": "C1", "event_time": T0 + 2, "op": "delete"}
UPSERT_3 = {**ANNA, "event_time": T0 + 3, "given_name": "Annie"}


async def _run(redis_url: str, events: list[dict], batch: bool) -> dict | None:
    pipeline = load_pipeline(None)
    store = RedisStore.from_url(redis_url)
    store.client.flushdb()
    stages = (IngestStage(pipeline), MatchStage(pipeline, store, b"k"),
              MasterStage(pipeline, store, store, store, b"k", store))
    golden = None
    groups = [events] if batch else [[e] for e in events]
    for group in groups:
        messages = [InMessage("raw.crm", 0, i, b"crm:C1", codec(CUSTOMER_EVENT).encode(e), T0)
                    for i, e in enumerate(group)]
        for stage in stages:
            result = stage.process(messages, T0 + 10)
            output = await result if asyncio.iscoroutine(result) else result
            messages = [InMessage(m.topic, 0, 0, m.key, m.value, T0) for m in output.messages
                        if m.topic in ("customer.canonical", "customer.linked")]
            for m in output.messages:
                if m.topic == "customer.golden":
                    golden = codec(GOLDEN).decode(m.value) if m.value is not None else None
    return golden


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("order", list(itertools.permutations(range(2))))
def test_an_older_upsert_never_resurrects_a_deleted_record(redis_url, order, batch):
    events = [(UPSERT_1, DELETE_2)[i] for i in order]
    assert asyncio.run(_run(redis_url, events, batch)) is None


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_newest_event_decides_in_any_order(redis_url, order, batch):
    events = [(UPSERT_1, DELETE_2, UPSERT_3)[i] for i in order]
    golden = asyncio.run(_run(redis_url, events, batch))
    if golden is None:  # the last output was a tombstone: only right if a later upsert came before the delete
        pytest.fail(f"deleted though an upsert newer than the deletion arrived: {order}")
    assert golden["given_name"] == "Annie" and golden["members"] == ["crm:C1"]
