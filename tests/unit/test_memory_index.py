"""hub.store.memory.MemoryIndex beside the Redis index (an embedded server):
the same records through the match stage give the same decisions, golden ids,
term counts and sizes; crafted cases pin what each must do on its own (the
block limit, ties among candidates, a block that moved since a record was
decided, merges, deletions, constraints)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
from pathlib import Path

import pytest

from hub.config import load_pipeline
from hub.crypto import Keyring
from hub.matching.features import blocking_values, features, hash_key
from hub.ports import LinkRequest
from hub.resolve import resolve_file
from hub.stages.match import MatchStage, _most_shared
from hub.standardise import standardise_and_score
from hub.store.memory import MemoryIndex
from hub.store.redis import RedisStore
from hub.store.redis.keys import TERMS
from test_match_index import SECRET, T0, _canonical_stream, decisions, message

KEYRING = Keyring([("k0", b"\x01" * 32)])
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_linkers.py"
_spec = importlib.util.spec_from_file_location("compare_linkers", _PATH)
compare_linkers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_linkers)


def run(coroutine):
    return asyncio.run(coroutine)


def both(redis_store):
    return {"memory": MemoryIndex(), "redis": redis_store}


async def state(index, members: list[str], pipeline) -> tuple:
    """What the match stage can read back: entries, term counts, sizes, tombstones, forwarding."""
    entries = await index.members(members)
    gids = sorted({e.golden_id for e in entries.values()})
    blocks = sorted({b for e in entries.values() for b in e.blocks})
    views = await index.blocks(blocks, pipeline.match.max_block_size)
    if isinstance(index, RedisStore):
        terms = sorted(k.decode() for k in index.client.hkeys(TERMS))
    else:
        terms = sorted(index._tf)
    return ({m: (e.golden_id, e.features, sorted(e.blocks)) for m, e in entries.items()},
            await index.tallies(terms, gids),
            {b: (sorted(v.members) if v.members is not None else None, v.version) for b, v in views.items()},
            await index.tombstones(members), await index.deleted_from(members),
            {g: await index.golden_members(g) for g in gids})


@pytest.mark.parametrize("limits", [{}, {"max_block_size": 3, "max_scored": 2, "max_golden_size": 4}],
                         ids=["defaults", "tight-limits"])
def test_a_generated_stream_decides_alike_on_both_indexes(redis_store, limits):
    """Upserts, updates and deletes in batches of 40, through the match stage on
    each index: every decision (outcome, score, evidence), every golden id, the
    term counts, golden sizes, block sets and versions and tombstones agree.
    Tight limits put broad keys (more records than max_block_size) and
    truncated candidate lists (max_scored) in play."""
    pipeline = load_pipeline(None)
    pipeline = pipeline.model_copy(update={"match": pipeline.match.model_copy(update=limits)})
    messages = _canonical_stream(400, seed=11, kinds=("upsert", "update", "delete"))
    members = sorted({m.key.decode() for m in messages})
    found = {}
    for name, index in both(redis_store).items():
        stage = MatchStage(pipeline, index, SECRET)
        decided, skipped = [], 0
        for start in range(0, len(messages), 40):
            output = decisions(run(stage.process(messages[start:start + 40], now_ms=T0)))
            decided.append(output)
            skipped += sum(d["blocking_keys_skipped"] for d in output.values())
        found[name] = (decided, run(state(index, members, pipeline)), skipped)
    assert found["memory"][0] == found["redis"][0]
    assert found["memory"][1] == found["redis"][1]
    entries, (counts, sizes), _, tombstones, left, _ = found["memory"][1]
    assert len(set(g for g, *_ in entries.values())) < len(entries)  # it merged records
    assert tombstones and left and counts  # deletes happened, terms were counted
    if limits:
        assert found["memory"][2] > 0  # broad keys were skipped


def test_resolve_gives_the_same_golden_records_on_both_indexes(redis_url):
    """`hub resolve`'s own path, the in-memory default and a Redis URL, on the
    generator's hard cases (agencies keeping different fields, invalid dates,
    twins, households): the same CSV, golden ids included (they are derived
    from the records, not drawn at random)."""
    import orjson

    records, _ = compare_linkers.generated_records(700, 22, ("registry", "clinic", "crm"))
    text = "".join(orjson.dumps(r).decode() + "\n" for r in records)
    RedisStore.from_url(redis_url).client.flushdb()
    outputs = {}
    for name, options in (("memory", {}), ("redis", {"redis_url": redis_url, "keyring": KEYRING})):
        out = io.StringIO()
        report = resolve_file(io.StringIO(text), out, load_pipeline(None), secret=SECRET, errors=io.StringIO(),
                              **options)
        outputs[name] = out.getvalue()
        assert report.records == len(records) > 1000  # large enough to estimate m/u
    RedisStore.from_url(redis_url).client.flushdb()
    assert outputs["memory"] == outputs["redis"]
    assert len({line.rsplit(",", 1)[1] for line in outputs["memory"].splitlines()[1:]}) < len(records)


def test_resolve_starts_no_redis_by_default(monkeypatch):
    import hub.connectors.embedded as embedded
    from hub.store.redis.base import RedisBase

    def refuse(*args, **kwargs):
        raise AssertionError("resolve started Redis")

    monkeypatch.setattr(RedisBase, "from_url", refuse)  # every Redis port class opens through it
    monkeypatch.setattr(embedded.EmbeddedRedis, "start", refuse)
    lines = "\n".join('{"source": "crm", "source_id": "C%d", "given_name": "Anna", "family_name": "Smith", '
                      '"email": "anna.smith@example.com"}' % i for i in range(3))
    report = resolve_file(io.StringIO(lines), io.StringIO(), load_pipeline(None), estimate=False,
                          errors=io.StringIO())
    assert report.records == 3 and report.golden_records == 1


# --- crafted cases -------------------------------------------------------------------------------------------

def _jon(source_id: str, **fields) -> dict:
    raw = {"source": "crm", "source_id": source_id, "given_name": "Jonathan", "family_name": "Smith",
           "birth_date": "1984-07-12", "emails": [{"address": "jon.smith@example.com"}]}
    raw.update(fields)
    return raw


def _request(raw: dict, gid: str) -> LinkRequest:
    record, _ = standardise_and_score({"op": "upsert", "record_type": "person", "event_time": T0, **raw})
    feats = features(record)
    return LinkRequest(f"{raw['source']}:{raw['source_id']}", gid, feats,
                       [hash_key(SECRET, v) for v in blocking_values(feats)])


def _hash_order(record: str, members) -> list[str]:
    salt = record.encode() + b"\x1f"
    return sorted(members, key=lambda m: hashlib.blake2s(salt + m.encode(), digest_size=8).digest())


def test_tied_candidates_are_chosen_alike_by_keyed_hash(redis_store):
    """Ten records each share every blocking key with the new one (a tie in
    keys shared and in their specificity); with max_scored 2 the two scored
    are the first two by the hash keyed by the new record, on both indexes
    (not the two whose keys sort first)."""
    pipeline = load_pipeline(None)
    pipeline = pipeline.model_copy(update={"match": pipeline.match.model_copy(update={"max_scored": 2})})
    twins = [f"crm:T{i}" for i in range(10)]
    chosen = {}
    for name, index in both(redis_store).items():
        run(index.link([_request(_jon(f"T{i}"), f"G{i:02d}") for i in range(10)]))
        out = run(MatchStage(pipeline, index, SECRET).process([message(_jon("NEW", source="pos"), 1)], now_ms=T0))
        chosen[name] = sorted(c["member"] for c in decisions(out)["pos:NEW"]["candidates"])
    assert chosen["memory"] == chosen["redis"] == sorted(_hash_order("pos:NEW", twins)[:2])
    assert chosen["memory"] != twins[:2]


def test_more_shared_keys_then_rarer_keys_win_before_the_hash(redis_store):
    """Candidate order over what `blocks` returns: a record sharing two keys
    beats those sharing one; between those sharing one, the one under the key
    fewer records hold wins; the rest is the keyed hash. Both indexes give
    `_most_shared` the same views."""
    for name, index in both(redis_store).items():
        run(index.link([LinkRequest("s:both", "G1", {}, ["k-a", "k-b"]),
                        LinkRequest("s:rare", "G2", {}, ["k-a"]),
                        *[LinkRequest(f"s:common{i}", f"G3{i}", {}, ["k-b"]) for i in range(3)],
                        LinkRequest("s:busy0", "G4", {}, ["k-busy"]),
                        *[LinkRequest(f"s:busy{i}", f"G4{i}", {}, ["k-busy"]) for i in range(1, 4)]]))
        views = run(index.blocks(["k-a", "k-b", "k-busy", "k-none"], 4))
        assert views["k-busy"].members is not None and sorted(views["k-busy"].members) == [
            f"s:busy{i}" for i in range(4)], name  # exactly at the limit: still used
        run(index.link([LinkRequest("s:busy4", "G5", {}, ["k-busy"])]))
        views = run(index.blocks(["k-a", "k-b", "k-busy", "k-none"], 4))
        assert views["k-busy"].members is None, name  # one more than the limit: a broad key, skipped
        assert (views["k-a"].version, views["k-b"].version, views["k-busy"].version, views["k-none"].version) \
            == (2, 4, 5, 0), name
        groups = [views[k].members or () for k in ("k-a", "k-b", "k-busy")]
        picked = _most_shared(groups, 3, "s:new")
        commons = _hash_order("s:new", [f"s:common{i}" for i in range(3)])
        assert picked == ["s:both", "s:rare", commons[0]], name


def test_a_batch_stops_where_a_block_moved_since_it_was_decided(redis_store):
    """The version check of the link script: a record decided on a block
    another worker has added to since is not linked, nor anything after it;
    additions by earlier records of the same batch do not count as a move."""
    results = {}
    for name, index in both(redis_store).items():
        run(index.link([LinkRequest("a:1", "G1", {"x": 1}, ["k1"])]))
        seen = run(index.blocks(["k1", "k2"], 50))
        versions = {b: v.version for b, v in seen.items()}
        first = run(index.link([LinkRequest("a:2", "G2", {}, ["k1", "k2"], seen_versions=versions),
                                LinkRequest("a:3", "G3", {}, ["k1"], seen_versions={"k1": versions["k1"]})]))
        run(index.link([LinkRequest("other:9", "G9", {}, ["k2"])]))  # another worker
        second = run(index.link([LinkRequest("a:4", "G4", {}, ["k1"], seen_versions={"k1": 3}),
                                 LinkRequest("a:5", "G5", {}, ["k2"], seen_versions={"k2": 1}),
                                 LinkRequest("a:6", "G6", {}, ["k3"])]))
        results[name] = (first, second, sorted(run(index.members(["a:4", "a:5", "a:6"]))))
    assert results["memory"] == results["redis"] == (["G2", "G3"], ["G4"], ["a:4"])


def test_merges_moves_unlinks_and_constraints_agree(redis_store):
    found = {}
    for name, index in both(redis_store).items():
        async def scenario(index=index):
            out = [await index.link([LinkRequest("m:1", "G1", {"a": 1}, ["b1"], terms=["t1", "t2"]),
                                     LinkRequest("m:2", "G2", {"a": 2}, ["b2"], terms=["t1"]),
                                     LinkRequest("m:3", "G3", {}, ["b3", "b9"], terms=["t3"])])]
            out.append(await index.link([LinkRequest("m:4", "G4", {}, ["b1", "b2"], ["G2", "G1"], terms=["t1"])]))
            out.append(await index.link([LinkRequest("m:5", "G9", {}, [], ["G1", "G3"])]))  # G1 forwarded to G4
            out.append(await index.link([LinkRequest("m:1", "G7", {"a": 3}, ["b9"], terms=["t2", "t2"])]))
            out.append(await index.tallies(["t1", "t2"], []))
            out.append(await index.link([LinkRequest("m:1", "G7", {"a": 3}, ["b9"], terms=["t2"])]))  # held twice
            out.append(await index.tallies(["t1", "t2"], []))
            # a new record decided into a golden record merged away since joins the survivor
            out.append(await index.link([LinkRequest("m:6", "G1", {}, ["b6"])]))
            out.append(await index.move("m:6", "G2"))  # a steward's move names a merged-away id
            out.append(await index.link([LinkRequest("m:6", "G5", {}, ["b6"])]))  # followed when it links again
            out.append({g: await index.golden_members(g) for g in ("G2", "G9")})
            out.append(await index.resolve_forward(["G1", "G2", "G3", "G4", "G9", "Gx"]))
            out.append(await index.pending_folds(["G4", "G9", "G1"]))
            out.append(await index.survivors_and_folds(["G1", "G2", "G3", "G4", "G9", "Gx"]))
            survivors = await index.resolve_forward(["G1", "G2", "G3", "G4", "G9", "Gx"])  # the reads it joins
            assert out[-1][:2] == (survivors, await index.pending_folds(sorted(set(survivors.values()))))
            assert out[-1][1]  # a merge's folds are pending here
            # and, a level down, what those absorbed had absorbed: G4 (merged into G9) had absorbed G2 and G1
            below = out[-1][2]
            assert below == {gid: (await index.pending_folds([gid])).get(gid, []) for gid in below}
            assert below["G4"] == ["G1", "G2"] and set(below) >= {"G1", "G2", "G3", "G4"}
            await index.folded({"G9": ["G4"]})
            out.append(await index.pending_folds(["G4", "G9"]))
            out.append(await index.survivors_and_folds(["G4", "G9"]))
            out.append(await index.move("m:3", "G8"))
            out.append(await index.move("m:none", "G8"))
            out.append(await index.tallies(["t1", "t2", "t3", "t4"], ["G9", "G8", "G4", "G1"]))
            tallied = await index.tallies_soon(["t1", "t3"], ["G1"])
            out.append(tallied())
            assert out[-1][1] == {"G1": 0}
            # read with the candidates: the sizes of the golden records these members belong to now
            entries = await index.members(["m:3", "m:4", "m:none"], with_sizes=True)
            out.append({m: (e.golden_id, e.golden_size) for m, e in entries.items()})
            assert {e.golden_id: e.golden_size for e in entries.values()} == \
                {e.golden_id: len(await index.golden_members(e.golden_id)) for e in entries.values()}
            assert entries["m:3"].golden_size == 1  # moved to G8 alone
            await index.add_tombstones({"m:2": 5, "m:x": 7})
            await index.add_tombstones({"m:2": 3, "m:x": 9})
            await index.remember_deleted_from({"m:2": "G9"})
            out.append((await index.tombstones(["m:2", "m:x", "m:y"]), await index.deleted_from(["m:2", "m:y"])))
            await index.remember_decisions({"m:2": b'{"candidates": []}', "m:nobody": b'{}'})
            out.append(await index.unlink(["m:2", "m:nobody"]))
            out.append((await index.decision("m:2"), await index.decision("m:nobody")))
            out.append((await index.tombstones(["m:2", "m:x"]), await index.deleted_from(["m:2"])))
            out.append(await index.constraints(["m:1", "m:3"]))  # none made yet: none read
            await index.add_constraints("split", "m:1", ["m:3", "m:4"])
            await index.add_constraints("link", "m:1", ["m:4"])  # a link lifts the split
            out.append(await index.constraints(["m:1", "m:3", "m:4", "m:5"]))
            assert (await index.constraints_soon(["m:1", "m:3", "m:4", "m:5"]))() == out[-1]
            await index.add_constraints("release", "m:1", ["m:3"])
            out.append(await index.constraints(["m:1", "m:3"]))
            await index.remember_decisions({"m:1": b'{"candidates": [{"member": "m:3", "golden_id": "G8"}], '
                                                   b'"merged_golden_ids": ["G8", "G4"]}'})
            out.append(await index.decision("m:1"))
            await index.forget_references(["m:3"])
            out.append(await index.decision("m:1"))
            entries = await index.members(["m:1", "m:2", "m:3", "m:4", "m:5", "m:6"])
            out.append({m: (e.golden_id, e.features, e.blocks) for m, e in entries.items()})
            bare = await index.members(["m:1", "m:2", "m:3", "m:4", "m:5", "m:6"], with_blocks=False)
            assert {m: (e.golden_id, e.features, e.blocks) for m, e in bare.items()} == \
                {m: (e.golden_id, e.features, []) for m, e in entries.items()}
            assert all(e.golden_size is None for e in [*entries.values(), *bare.values()])  # not asked
            # with the sizes of their golden records (the guardrails ask them of the candidates'), read with them
            sized = await index.members(["m:1", "m:2", "m:3", "m:4", "m:5", "m:6", "m:nobody"], with_blocks=False,
                                        with_sizes=True)
            assert {m: (e.golden_id, e.features, e.blocks) for m, e in sized.items()} == \
                {m: (e.golden_id, e.features, []) for m, e in entries.items()}
            for entry in sized.values():
                assert entry.golden_size == len(await index.golden_members(entry.golden_id)) > 0
            assert len({e.golden_id for e in sized.values()}) < len(sized)  # several share a golden record
            soon = await index.members_soon(["m:1", "m:4"], with_sizes=True)
            assert {m: (e.blocks, e.golden_size) for m, e in soon().items()} == \
                {m: (entries[m].blocks, sized[m].golden_size) for m in ("m:1", "m:4") if m in entries}
            out.append({m: e.golden_size for m, e in sized.items()})
            out.append({g: await index.golden_members(g) for g in ("G1", "G2", "G4", "G8", "G9")})
            return out

        found[name] = run(scenario())
    assert found["memory"] == found["redis"]
    assert found["memory"][2] == ["G9"]  # the record founding G9 absorbed G4 (G1's survivor) and G3
