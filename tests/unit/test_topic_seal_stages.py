"""The stages with a topic keyring (hub.dataflow.stage_runners, as the worker
and `hub replay` build them with HUB_SEAL_TOPICS on): the ingest stage seals
the canonical records it writes, the match stage opens them and forwards
them sealed in the linked records, the master opens those and seals the
golden records and audit events it writes, the syndicate opens them, and
the targets receive exactly what they receive when nothing is sealed."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.config import load_pipeline
from hub.crypto import Keyring, SealError
from hub.dataflow import stage_runners
from hub.demo import encode_event
from hub.records import InMessage
from hub.replay import Replay
from hub.schemas import AUDIT, CANONICAL, GOLDEN, LINKED, codec
from hub.stages.syndicate import SyndicateStage
from hub.store.memory_store import MemoryStore
from hub.testing.generator import generate
from hub.topic_seal import SEALED_FIELD, open_linked, open_record, open_value, seal
from test_memory_store import ListSink

SECRET = b"topic-seal-stages-test-secret-32"
KEYRING = Keyring.from_settings(None, SECRET.decode())
NOW = 1_780_000_000_000
START = NOW - 20 * 86_400_000


def _messages(persons: int = 60, seed: int = 31) -> list[InMessage]:
    events = generate(persons, seed=seed, start_ms=START)
    return [InMessage(e.topic, 0, START + i, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value),
                      START + i) for i, e in enumerate(events)]


def _run(messages, topic_keyring) -> list:
    pipeline = load_pipeline(None)
    sink = ListSink()
    driver = Replay(pipeline, stage_runners(pipeline, MemoryStore(), sink, SECRET, topic_keyring, "staged"), sink, 50,
                    "staged")
    asyncio.run(driver.run(messages))
    return [(r.topic, r.key, r.value) for r in sink.records]


def _names(canonical: dict) -> list[str]:
    record = canonical["record"]
    found = [record[a] for a in ("given_name", "family_name") if record[a] and len(record[a]) >= 4]
    return found + [e["address"] for e in record["emails"]]


def test_the_master_seals_and_the_targets_get_the_same_slices(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: NOW / 1000)
    messages = _messages()
    clear, sealed = _run(messages, None), _run(messages, KEYRING)
    topics = load_pipeline(None).topics
    assert [(t, k) for t, k, _ in sealed] == [(t, k) for t, k, _ in clear]  # the same messages, in the same order
    golden_codec, audit_codec = codec(GOLDEN), codec(AUDIT)
    canonical_codec, linked_codec = codec(CANONICAL), codec(LINKED)
    goldens = audits = opened_audits = canonicals = contributions = 0
    for (topic, key, value), (_, _, plain) in zip(sealed, clear):
        if value is not None and topic == topics.canonical:
            raw = canonical_codec.decode(value)
            if raw[SEALED_FIELD] is None:  # a deletion: nothing personal, nothing sealed
                assert raw["record"]["op"] == "delete" and value == plain
                continue
            canonicals += 1
            assert raw["record"]["emails"] == []
            assert raw["record"]["given_name"] is None and raw["record"]["source_id"]  # ids in clear
            opened = open_value(KEYRING, CANONICAL, value, topic, key)
            assert canonical_codec.encode(opened) == plain  # opened: as written in clear without a keyring
            names = _names(opened)
            assert not [n for n in names if n.encode() in value] and [n for n in names if n.encode() in plain] == names
            continue
        if value is not None and topic == topics.linked:
            raw = linked_codec.decode(value)
            opened = open_linked(KEYRING, raw, topics.canonical)
            assert linked_codec.encode(opened) == plain
            if raw["canonical"] is not None and raw["canonical"]["record"]["op"] != "delete":
                contributions += 1
                assert raw["canonical"][SEALED_FIELD] is not None  # forwarded as the ingest stage sealed it
                assert not [n for n in _names(opened["canonical"]) if n.encode() in value]
                with pytest.raises(SealError):  # sealed for the canonical topic, not the linked one
                    open_record(KEYRING, CANONICAL, raw["canonical"], topics.linked, key)
            continue
        if value is None or topic not in (topics.golden, topics.audit):
            assert value == plain, f"{topic} differs"  # targets, dead letters: untouched
            continue
        schema, record_codec = (GOLDEN, golden_codec) if topic == topics.golden else (AUDIT, audit_codec)
        raw = record_codec.decode(value)
        opened = open_value(KEYRING, schema, value, topic, key)
        assert record_codec.encode(opened) == plain  # opened: the record written in clear without a keyring
        if schema == GOLDEN:
            goldens += 1
            assert raw[SEALED_FIELD] is not None and raw["given_name"] is None and raw["emails"] == []
            names = [n for n in (opened["given_name"], opened["family_name"]) if n and len(n) >= 4]
            assert not [n for n in names if n.encode() in value]
            assert [n for n in names if n.encode() in plain] == names
        elif raw["changes"] or opened["changes"]:
            opened_audits += 1
            assert raw[SEALED_FIELD] is not None and raw["changes"] == []
        else:  # match decisions, merges, erasures: nothing personal, nothing sealed
            audits += 1
            assert raw[SEALED_FIELD] is None and value == plain
    assert goldens > 40 and opened_audits > 40 and audits > 40 and canonicals > 40 and contributions > 40
    assert any(t.startswith("mastered.") and v is not None for t, _, v in sealed)


def test_the_syndicate_needs_the_keyring_for_a_sealed_golden_record():
    pipeline = load_pipeline(None)
    golden = {"golden_id": "G1", "version": 1, "record_type": "person", "given_name": "Ada", "middle_name": None,
              "family_name": "Lovelace", "birth_date": None, "gender": None, "national_id": None,
              "loyalty_id": "L000000001", "organisation_name": None, "account_ref": None, "lifecycle": None,
              "account_golden_id": None, "household_id": None, "emails": [], "phones": [], "addresses": [],
              "preferences": {}, "consents": [], "lineage": {}, "survey": None, "members": ["pos:1"],
              "quality_score": 0.5, "freshness": 1.0, "stale_attributes": [], "updated_at": NOW,
              "last_event_time": NOW, "trigger_produced_at": None, "cause": "source_event"}
    value = codec(GOLDEN).encode(seal(KEYRING, GOLDEN, golden, pipeline.topics.golden, "G1"))
    message = InMessage(pipeline.topics.golden, 0, 1, b"G1", value, NOW)
    opened = asyncio.run(SyndicateStage(pipeline, MemoryStore(), KEYRING).process([message], NOW))
    in_clear = asyncio.run(SyndicateStage(pipeline, MemoryStore()).process(
        [InMessage(pipeline.topics.golden, 0, 1, b"G1", codec(GOLDEN).encode(golden), NOW)], NOW))
    assert [(m.topic, m.key, m.value) for m in opened.messages] == \
        [(m.topic, m.key, m.value) for m in in_clear.messages]
    assert any(m.value and b"L000000001" in m.value for m in opened.messages)  # the loyalty app's key and slice
    with pytest.raises(SealError):
        asyncio.run(SyndicateStage(pipeline, MemoryStore()).process([message], NOW))
    with pytest.raises(SealError):  # a value moved under another golden id
        asyncio.run(SyndicateStage(pipeline, MemoryStore(), KEYRING).process(
            [InMessage(pipeline.topics.golden, 0, 1, b"G2", value, NOW)], NOW))
