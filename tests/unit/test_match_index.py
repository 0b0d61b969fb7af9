"""The match stage on a real (embedded) Redis identity index: term counts kept
by the link script, golden-record sizes, the over-merge guardrails, and a batch
deciding as its records would one at a time."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hub.config import load_pipeline
from hub.matching.decide import new_golden_id
from hub.matching.features import blocking_values, features, hash_key, term_keys
from hub.matching.frequencies import TermCounts, flatten
from hub.ports import LinkRequest
from hub.records import InMessage
from hub.schemas import AUDIT, CANONICAL, codec
from hub.stages.match import MatchStage
from hub.standardise import standardise_and_score
from hub.store.redis import RedisStore
from hub.store.redis.keys import TERMS
from hub.testing.generator import generate

SECRET = b"test-secret"
T0 = 1_767_225_600_000


@pytest.fixture
def store(redis_url):
    store = RedisStore.from_url(redis_url)
    store.client.flushdb()
    yield store
    store.client.flushdb()
    asyncio.run(store.close())


def message(raw: dict, offset: int = 0) -> InMessage:
    record, quality = standardise_and_score({"op": "upsert", "record_type": "person", "event_time": T0 + offset,
                                             **raw})
    value = codec(CANONICAL).encode({"record": record, "quality": quality, "ingested_at": 0,
                                     "origin": {"topic": "t", "partition": 0, "offset": offset, "produced_at": None}})
    return InMessage("customer.canonical", 0, offset, f"{raw['source']}:{raw['source_id']}".encode(), value)


def decisions(output) -> dict[str, dict]:
    audit = codec(AUDIT)
    found = {}
    for out in output.messages:
        if out.topic == "audit":
            event = audit.decode(out.value)
            found[event["subject"]] = event["decision"]
    return found


def test_the_index_counts_terms_as_records_enter_change_and_leave(store):
    """The link script's counts are the in-memory TermCounts' counts, whatever happens to the records."""
    twin = TermCounts()
    comparisons = load_pipeline(None).match.comparison_rules()

    def request(member, given, family, gid="G1"):
        feats = {"gn": given, "fn": family}
        terms = flatten(term_keys(SECRET, feats, comparisons))
        return LinkRequest(member, gid, feats, [f"b-{member}"], terms=terms), terms

    held: dict[str, list[str]] = {}

    async def link(*specs):
        requests = []
        for member, given, family in specs:
            req, terms = request(member, given, family)
            twin.replace(held.get(member, ()), terms)
            held[member] = terms
            requests.append(req)
        await store.link(requests)

    async def scenario():
        await link(("crm:1", "ann", "smith"), ("pos:1", "ann", "smith"), ("crm:2", "bob", "jones"))
        await link(("pos:1", "ann", "okafor"))          # married: smith -1, okafor +1
        await link(("crm:2", "bob", "jones"))           # the same again: nothing moves
        await store.unlink(["crm:2"])                   # left: jones and bob gone
        twin.replace(held.pop("crm:2"), ())
        keys = sorted({k for terms in held.values() for k in terms}
                      | set(flatten(term_keys(SECRET, {"gn": "bob", "fn": "jones"}, comparisons))))
        counts, sizes = await store.tallies(keys, ["G1", "G-none"])
        return counts, sizes

    counts, sizes = asyncio.run(scenario())
    assert counts == dict(twin.counts)
    smith = term_keys(SECRET, {"fn": "smith"}, comparisons)["fn"]
    assert counts[smith] == 1 and counts["#fn"] == 2 and counts["#gn"] == 2
    assert sizes == {"G1": 2, "G-none": 0}
    assert set(store.client.hgetall(TERMS)) == {k.encode() for k in twin.counts}  # nothing left at zero


def _canonical_stream(persons: int, seed: int = 5, kinds=("upsert", "update")) -> list[InMessage]:
    """A generated stream as canonical messages (without deletes by default:
    a delete supersedes a batch's older events)."""
    out = []
    for offset, event in enumerate(e for e in generate(persons, seed=seed, invalid_share=0.0, consent_share=0.0)
                                   if e.kind in kinds):
        record, quality = standardise_and_score(event.value)
        value = codec(CANONICAL).encode({"record": record, "quality": quality, "ingested_at": 0,
                                         "origin": {"topic": "t", "partition": 0, "offset": offset,
                                                    "produced_at": None}})
        out.append(InMessage("customer.canonical", 0, offset, event.key, value))
    return out


def _golden_ids(store: RedisStore, messages: list[InMessage]) -> dict[str, str]:
    members = sorted({m.key.decode() for m in messages})
    return {m: e.golden_id for m, e in asyncio.run(store.members(members)).items()}


@pytest.mark.parametrize("max_scored", [40, 2])
def test_a_batch_decides_as_its_records_would_one_at_a_time(store, max_scored):
    """Term counts, golden sizes and blocking keys seen by each record include those decided
    before it in the same batch: batching does not change a decision, its
    score or its evidence. (Small guardrails, so they come into play; with few
    candidates scored, which ones a record meets depends on the records before it.)"""
    pipeline = load_pipeline(None)
    rules = pipeline.match.model_copy(update={"max_golden_size": 3, "max_bridged_size": 1, "max_scored": max_scored})
    pipeline = pipeline.model_copy(update={"match": rules})
    messages = _canonical_stream(250)

    async def run(batch_size: int) -> dict[str, dict]:
        stage = MatchStage(pipeline, store, SECRET)
        decided = {}
        for start in range(0, len(messages), batch_size):
            decided.update(decisions(await stage.process(messages[start:start + batch_size], now_ms=T0)))
        return decided

    one_by_one = asyncio.run(run(1))
    one_at_a_time = _golden_ids(store, messages)
    counts = store.client.hgetall(TERMS)
    store.client.flushdb()
    assert asyncio.run(run(len(messages))) == one_by_one
    assert _golden_ids(store, messages) == one_at_a_time
    assert store.client.hgetall(TERMS) == counts
    assert len(set(one_at_a_time.values())) < len(one_at_a_time)  # it did merge records
    held = [d for d in one_by_one.values() if d["held_for_review"]]
    assert any("max_golden_size" in d["held_for_review"] for d in held)
    assert any("max_bridged_size" in d["held_for_review"] for d in held)
    assert any("(tf 1 in" in c["level"] for d in one_by_one.values() for cand in d["candidates"]
               for c in cand["comparisons"])


def _jonathan(source: str, source_id: str, **fields) -> dict:
    raw = {"source": source, "source_id": source_id, "given_name": "Jonathan", "family_name": "Smith",
           "birth_date": "1984-07-12", "emails": [{"address": "jon.smith@example.com"}],
           "phones": [{"number": "07911 123456"}]}
    raw.update(fields)
    return raw


def _preload(store: RedisStore, gid: str, count: int, prefix: str) -> None:
    """A golden record of `count` look-alike source records, linked as if matched earlier."""
    requests = []
    for i in range(count):
        record, _ = standardise_and_score({"op": "upsert", "record_type": "person", "event_time": T0,
                                           **_jonathan("crm", f"{prefix}{i}")})
        feats = features(record)
        requests.append(LinkRequest(f"crm:{prefix}{i}", gid, feats,
                                    [hash_key(SECRET, v) for v in blocking_values(feats)]))
    asyncio.run(store.link(requests))


@pytest.mark.parametrize("bridged, outcome", [(10, "review"), (None, "merge")])
def test_a_record_joining_two_large_golden_records_is_held_for_review(store, bridged, outcome):
    pipeline = load_pipeline(None)
    rules = pipeline.match.model_copy(update={"max_bridged_size": bridged, "max_scored": 100, "max_block_size": 100})
    pipeline = pipeline.model_copy(update={"match": rules})
    _preload(store, "G-a", 12, "a")
    _preload(store, "G-b", 15, "b")
    stage = MatchStage(pipeline, store, SECRET)
    out = asyncio.run(stage.process([message(_jonathan("pos", "P1"))], now_ms=T0))
    decision = decisions(out)["pos:P1"]
    assert decision["outcome"] == outcome
    gid = asyncio.run(store.members(["pos:P1"]))["pos:P1"].golden_id
    if outcome == "review":
        assert decision["held_for_review"] == ("this record would join 2 golden records of 15, 12 source records "
                                               "(max_bridged_size 10)")
        assert gid == new_golden_id("pos:P1")
        assert any(m.topic == "steward.review" for m in out.messages)
        assert asyncio.run(store.tallies([], ["G-a", "G-b"]))[1] == {"G-a": 12, "G-b": 15}
    else:
        assert decision["held_for_review"] is None and gid == "G-a"
        assert asyncio.run(store.tallies([], ["G-a", "G-b"]))[1] == {"G-a": 28, "G-b": 0}


def test_a_common_surname_weighs_less_than_a_rare_one(store):
    """Term frequencies from the index: the same pair of records scores less
    when the index holds many others with that surname."""
    pipeline = load_pipeline(None)

    def pair_score(family: str, crowd: int) -> tuple[float, str]:
        store.client.flushdb()
        stage = MatchStage(pipeline, store, SECRET)
        others = [message({"source": "crm", "source_id": f"x{i}", "given_name": f"Other{chr(97 + i % 26)}{i}",
                           "family_name": family, "birth_date": f"19{50 + i % 40}-01-0{1 + i % 9}"}, i)
                  for i in range(crowd)]
        others += [message({"source": "crm", "source_id": f"y{i}", "given_name": f"Filler{i}",
                            "family_name": f"Rare{i}x"}, 100 + i) for i in range(40 - crowd)]
        asyncio.run(stage.process(others, now_ms=T0))
        first = message({"source": "crm", "source_id": "A", "given_name": "Jonathan", "family_name": family,
                         "birth_date": "1984-07-12"}, 200)
        asyncio.run(stage.process([first], now_ms=T0))
        out = asyncio.run(stage.process([message({"source": "pos", "source_id": "B", "given_name": "Jonathan",
                                                   "family_name": family, "birth_date": "1984-07-12"}, 201)],
                                        now_ms=T0))
        decision = decisions(out)["pos:B"]
        candidate = next(c for c in decision["candidates"] if c["member"] == "crm:A")
        level = next(c["level"] for c in candidate["comparisons"] if c["attribute"] == "family_name")
        return candidate["score"], level

    common, common_level = pair_score("Smith", 39)
    rare, rare_level = pair_score("Zweistein", 0)
    assert common < rare
    assert common_level.startswith("exact (tf 1 in ") and rare_level.startswith("exact (tf 1 in ")
    assert orjson.dumps(common_level)  # explainable text
