"""The syndicate stage fed golden records read back from their topic (the
staged engine, a second consumer group re-reading every version): a version
the master has replaced since is not sent; the current one is, once; one the
master has deleted since is left to its tombstone. On the store in memory and
on Redis."""

from __future__ import annotations

import asyncio

import pytest

from hub import metrics
from hub.config import load_pipeline
from hub.ports import GoldenState
from hub.records import REASON_HEADER, InMessage
from hub.schemas import GOLDEN, codec
from hub.stages.syndicate import SyndicateStage
from hub.store.memory_store import MemoryStore

NOW = 1_780_000_000_000
PIPELINE = load_pipeline(None)


def _golden(version: int, given_name: str) -> dict:
    return {"golden_id": "G1", "version": version, "record_type": "person", "given_name": given_name,
            "middle_name": None, "family_name": "Lovelace", "birth_date": None, "gender": None,
            "national_id": None, "loyalty_id": "L000000001", "organisation_name": None, "account_ref": None,
            "lifecycle": None, "account_golden_id": None, "household_id": None, "emails": [], "phones": [],
            "addresses": [], "preferences": {}, "consents": [], "lineage": {}, "survey": None,
            "members": ["pos:1"], "quality_score": 0.5, "freshness": 1.0, "stale_attributes": [],
            "updated_at": NOW, "last_event_time": NOW, "trigger_produced_at": None, "cause": "source_event"}


def _read_back(golden: dict) -> InMessage:
    return InMessage(PIPELINE.topics.golden, 0, golden["version"], b"G1", codec(GOLDEN).encode(golden), NOW)


def _tombstone(reason: bytes) -> InMessage:
    return InMessage(PIPELINE.topics.golden, 0, 9, b"G1", None, NOW, [(REASON_HEADER, reason)])


def _sent(stage: SyndicateStage, message: InMessage) -> list:
    async def go():
        output = await stage.process([message], NOW)
        await output.after_delivery()
        return [(m.topic, m.value) for m in output.messages]
    return asyncio.run(go())


@pytest.fixture(params=["memory", "redis"])
def store(request):
    return MemoryStore() if request.param == "memory" else request.getfixturevalue("redis_store")


def _superseded(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("hub_syndication_superseded_total", {"outcome": outcome}) or 0.0


def test_an_old_version_read_back_sends_the_current_one_once(store):
    first, second = _golden(1, "Ada"), _golden(2, "Augusta")
    asyncio.run(store.save([GoldenState("G1", {}, second)], []))
    stage = SyndicateStage(PIPELINE, store, goldens=store)
    before = _superseded("changed")
    sent = _sent(stage, _read_back(first))
    assert sent and all(b"Augusta" in value for _, value in sent if value is not None)
    assert not any(value is not None and b"Ada" in value for _, value in sent)
    assert _superseded("changed") == before + 1
    # the current version, read back next, is what every target holds already
    assert _sent(stage, _read_back(second)) == []


def test_without_the_check_an_old_version_is_sent_again():
    """What the check prevents: the stage alone sends each version it reads, the old one included."""
    store = MemoryStore()
    asyncio.run(store.save([GoldenState("G1", {}, _golden(2, "Augusta"))], []))
    stage = SyndicateStage(PIPELINE, store)
    assert _sent(stage, _read_back(_golden(2, "Augusta")))
    assert any(value is not None and b"Ada" in value for _, value in _sent(stage, _read_back(_golden(1, "Ada"))))


def test_a_version_deleted_since_is_left_to_its_tombstone(store):
    current = _golden(2, "Augusta")
    asyncio.run(store.save([GoldenState("G1", {}, current)], []))
    stage = SyndicateStage(PIPELINE, store, goldens=store)
    held = _sent(stage, _read_back(current))
    assert held
    asyncio.run(store.save([], ["G1"]))
    before = _superseded("deleted")
    assert _sent(stage, _read_back(_golden(1, "Ada"))) == []  # not sent, and not tombstoned for the wrong reason
    assert _superseded("deleted") == before + 1
    gone = _sent(stage, _tombstone(b"erased"))
    assert {topic for topic, _ in gone} == {topic for topic, _ in held}
    assert all(value is None for _, value in gone)
