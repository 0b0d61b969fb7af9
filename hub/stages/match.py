"""Match stage: canonical records to golden ids, through the identity index.

Per batch: one round trip for the records' own index entries and blocking
keys, one for the candidates' features, then each record is decided in
order against the index plus the records decided earlier in the same batch
(so two duplicates in one batch still meet), and all links are written with
one pipelined atomic Lua call per record.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter

import orjson

from hub import metrics
from hub.config import PipelineConfig
from hub.crypto import Keyring
from hub.matching.decide import EXISTING, MERGE, NEW, REVIEW, Candidate, Decision, decide, new_golden_id
from hub.matching.features import blocking_values, features, hash_key, term_keys
from hub.matching.frequencies import TermCounts, flatten
from hub.messages import audit_event, link_instruction
from hub.ports import IdentityIndex, LinkRequest, MemberEntry
from hub.records import InMessage, OutMessage, member_key
from hub.schemas import AUDIT, CANONICAL, LINKED, MATCH_DECISION, codec
from hub.stages import StageOutput
from hub.topic_seal import SEALED_FIELD, TopicValues

STAGE = "match"
# After this many conflicting attempts a batch links without the version check,
# so two workers fighting over one busy blocking key still make progress.
MAX_ATTEMPTS = 8


def _most_shared(groups, limit: int, record: str) -> list[str]:
    """Bounded work per record however large the index: the records sharing
    the most blocking keys with it are the likeliest matches. Among those
    sharing as many, keys few records hold say more than keys many do; what
    is still tied is ordered by a hash keyed by the record being matched, so
    no source's records (whose keys sort first) are favoured, and a replay
    picks the same."""
    shared: dict[str, int] = {}
    specific: dict[str, float] = {}
    for group in groups:
        weight = 1.0 / len(group) if group else 0.0
        for member in group:
            shared[member] = shared.get(member, 0) + 1
            specific[member] = specific.get(member, 0.0) + weight
    if len(shared) <= limit:
        return sorted(shared)
    salt = record.encode() + b"\x1f"
    return sorted(shared, key=lambda m: (-shared[m], -specific[m],
                                         hashlib.blake2s(salt + m.encode(), digest_size=8).digest()))[:limit]


def _respect_splits(decision: Decision, entries: dict[str, MemberEntry], constraints) -> Decision:
    """A record that matches several golden records merges them, unless a
    steward split records across them: then it joins the best-scoring one and
    those compatible with it."""
    linked = {decision.golden_id, *decision.absorbed}
    apart_pairs = set()
    for member, (apart, _) in constraints.items():
        mine = entries.get(member)
        if mine is None or mine.golden_id not in linked:
            continue
        for other in apart:
            theirs = entries.get(other)
            if theirs is not None and theirs.golden_id in linked and theirs.golden_id != mine.golden_id:
                apart_pairs.add(frozenset((mine.golden_id, theirs.golden_id)))
    if not apart_pairs:
        return decision
    ranked = [c["golden_id"] for c in decision.evidence if c["golden_id"] in linked]
    ranked += sorted(linked - set(ranked))
    kept: list[str] = []
    for gid in ranked:
        if all(frozenset((gid, k)) not in apart_pairs for k in kept):
            kept.append(gid)
    kept.sort()
    return Decision(decision.outcome, kept[0], decision.score, kept[1:], decision.evidence)


class MatchStage:
    hand_on_only = False  # linked records only handed on to the master step (hub.engine), not written
    def __init__(self, config: PipelineConfig, index: IdentityIndex, secret: bytes, comparisons=None,
                 topic_keyring: Keyring | None = None):
        """`topic_keyring` opens the canonical records the ingest stage sealed (hub.topic_seal); values in clear
        need none. A linked record carries its canonical record as it was written, sealed or not."""
        self.config = config
        self.index = index
        self.secret = secret
        self.rules = config.match
        self.comparisons = comparisons or config.match.comparison_rules()
        self.canonical = TopicValues(CANONICAL, config.topics.canonical, None, topic_keyring)
        self.linked = codec(LINKED)
        self.audit = codec(AUDIT)
        self.decision_codec = codec(MATCH_DECISION)
        self._decision_counters = {d: metrics.MATCH_DECISIONS.labels(d) for d in (MERGE, REVIEW, NEW, EXISTING)}
        for outcome in ("delete", "delete_unknown", "superseded"):
            self._decision_counters[outcome] = metrics.MATCH_DECISIONS.labels(outcome)

    async def process(self, batch: list[InMessage], now_ms: int | None = None, outputs: bool = True) -> StageOutput:
        """Decide and link the batch's records in order; with `outputs` (a worker), the linked records,
        audit decisions and review items to send, and each decision kept for `hub explain`. Without
        (`hub resolve` in memory: only the index's answer is read), none of that is built."""
        now_ms = now_ms or int(time.time() * 1000)
        items = []
        written: dict[int, dict] = {}  # id(opened canonical record) -> as written (sealed): what the master gets
        for message in batch:
            if message.record is not None:  # handed on in the pass (hub.engine), open already
                canonical = message.record
            elif message.value is None:
                continue  # a tombstone left by an erasure: nothing to match
            else:
                canonical = self.canonical.codec.decode(message.value)
            record = canonical["record"]
            member = member_key(record["source"], record["source_id"])
            if canonical.get(SEALED_FIELD) is not None:
                sealed, canonical = canonical, self.canonical.opened(canonical, member)
                written[id(canonical)] = sealed
                record = canonical["record"]
            if record["op"] == "delete":
                items.append((member, canonical, None, []))
                continue
            feats = features(record)
            blocks = [hash_key(self.secret, value) for value in blocking_values(feats)]
            feats["t"] = record["event_time"]  # when the source said it: an older event never undoes a newer one
            items.append((member, canonical, feats, blocks))
        drop_superseded = await self._superseded_soon(items)

        results: list[tuple[str, dict, Decision, int]] = []
        pending = items
        for attempt in range(MAX_ATTEMPTS):
            pending, planned = await self._plan(pending, verify=attempt < MAX_ATTEMPTS - 1, keep=drop_superseded)
            drop_superseded = None
            done = await self._commit(planned)
            results.extend(r for r, _ in planned[:done] if r is not None)
            pending = pending[done:]
            if not pending:
                break
            metrics.MATCH_CONFLICTS.inc()

        out: list[OutMessage] = []
        explained: dict[str, bytes] = {}
        outcomes = Counter(decision.outcome for _, _, decision, _ in results)
        for outcome, count in outcomes.items():
            self._decision_counters[outcome].inc(count)
        if skipped_keys := sum(skipped for *_, skipped in results):
            metrics.BLOCKS_SKIPPED.inc(skipped_keys)
        for member, canonical, decision, skipped in results:
            if outputs:
                out.extend(self._outputs(member, canonical, written.get(id(canonical), canonical), decision, skipped,
                                         now_ms, explained))
        if explained:
            await self.index.remember_decisions(explained)
        return StageOutput(out)

    async def _superseded_soon(self, items: list):
        """A source record its source deleted stays deleted for every older
        event, whatever order they arrive in; the deletions are remembered.
        The deletion times are read with the planning's first round trip: a
        function taking the items gives those that are not superseded."""
        deletes: dict[str, int] = {}
        for member, canonical, feats, _ in items:
            if feats is None:
                deletes[member] = max(deletes.get(member, -1), canonical["record"]["event_time"])
        deleted_soon = await self.index.tombstones_soon(sorted({m for m, _, feats, _ in items if feats is not None}))

        async def keep(items: list) -> list:
            deleted_at = deleted_soon()
            for member, at in deletes.items():
                deleted_at[member] = max(deleted_at.get(member, -1), at)
            kept = []
            for item in items:
                member, canonical, feats, _ = item
                if feats is not None and deleted_at.get(member, -1) >= canonical["record"]["event_time"]:
                    self._decision_counters["superseded"].inc()
                    continue
                kept.append(item)
            await self.index.add_tombstones(deletes)
            return kept
        return keep

    async def _plan(self, items, verify: bool,
                    keep=None) -> tuple[list, list[tuple[tuple | None, LinkRequest | str | None]]]:
        """Read the index once for these records and decide each in order, the
        later ones seeing the earlier ones: the records planned (`keep`, given,
        says which, once the first round trip has read what it needs) and one
        (result, index operation) for each."""
        known_soon = await self.index.members_soon(list({m for m, *_ in items}))  # with the blocks' round trip
        all_blocks = list({b for *_, blocks in items for b in blocks})
        views = await self.index.blocks(all_blocks, self.rules.max_block_size)
        known = known_soon()
        if keep is not None:
            items = await keep(items)
        wanted: set[str] = set()
        candidate_counts: list[int] = []  # observed once per pass (hub_match_candidates)
        chosen: dict[int, list[str]] = {}  # item position -> its likeliest candidates, as the index holds them
        for position, (member, _, feats, blocks) in enumerate(items):  # only those are fetched and scored
            if feats is not None:
                chosen[position] = _most_shared([views[b].members or () for b in blocks], self.rules.max_scored,
                                                member)
                wanted.update(chosen[position])
        wanted -= known.keys()
        # the constraints and the tallies are read with the candidates, in one round trip
        constraints_soon = await self.index.constraints_soon(
            sorted({m for m, _, feats, _ in items if feats and m not in known} | wanted))
        # a lead converted into this record: the record joins the lead's golden record, history and all
        converted = {m: c["record"].get("converted_from") for m, c, feats, _ in items
                     if feats is not None and c["record"].get("converted_from")}
        wanted |= set(converted.values()) - known.keys()
        tallied = await self._tallies_soon(items, known)
        # the batch's own records come with their blocking keys (a re-link or an unlink drops the ones it
        # leaves); candidates only need their features and golden ids, and (for the guardrails) the sizes of
        # their golden records, read with them
        guarded = self._guarded
        candidate_entries = await self.index.members(sorted(wanted), with_blocks=False, with_sizes=guarded)
        entries: dict[str, MemberEntry] = {**known, **candidate_entries}
        constraints = constraints_soon()
        terms, sizes = tallied()
        # records a steward linked or split these from: rarely among the candidates, read in a round trip of
        # their own
        constrained = {m for apart, pinned in constraints.values() for m in apart | pinned} - entries.keys()
        if constrained:
            more = await self.index.members(sorted(constrained), with_blocks=False, with_sizes=guarded)
            candidate_entries.update(more)
            entries.update(more)
        if guarded:  # the batch's own entries' golden records were sized by the tallies
            sizes.update({e.golden_id: e.golden_size for e in candidate_entries.values()})
        overlay_blocks = {b: set(v.members) for b, v in views.items() if v.members is not None}
        changed_blocks: set[str] = set()  # changed by the batch's decisions: a record in none keeps its choice
        # golden id -> the entries held under it, so a merge relabels its members without scanning every entry
        by_golden: dict[str, list[MemberEntry]] = {}
        for entry in entries.values():
            by_golden.setdefault(entry.golden_id, []).append(entry)

        left = await self.index.deleted_from(sorted({m for m, _, feats, _ in items if feats is None} - entries.keys()))
        guardrails = self.rules.guardrails()
        planned: list[tuple[tuple | None, LinkRequest | str | None]] = []
        for position, (member, canonical, feats, blocks) in enumerate(items):
            if feats is None:
                entry = entries.get(member)
                if entry is None and member in left:
                    # unlinked already, its linked record maybe lost in a crash: tell the master again
                    planned.append(((member, canonical, Decision("delete", left[member], None), 0), None))
                    continue
                if entry is None:
                    self._decision_counters["delete_unknown"].inc()
                    planned.append((None, None))
                    continue
                if entry.features.get("t", -1) > canonical["record"]["event_time"]:
                    self._decision_counters["superseded"].inc()  # the source said more since it deleted it
                    planned.append((None, None))
                    continue
                del entries[member]
                for b in entry.blocks:
                    overlay_blocks.get(b, set()).discard(member)
                changed_blocks.update(entry.blocks)
                terms.replace(flatten(self._term_keys(entry.features)), ())
                sizes[entry.golden_id] = max(0, sizes.get(entry.golden_id, 1) - 1)
                planned.append(((member, canonical, Decision("delete", entry.golden_id, None), 0), member))
                continue
            skipped = sum(1 for b in blocks if views[b].members is None)
            entry = entries.get(member)
            if entry is not None:
                decision = Decision(EXISTING, entry.golden_id, None)
                if entry.features.get("t", -1) > feats["t"]:
                    feats, blocks = entry.features, entry.blocks  # the index keeps the newer view
                elif canonical["record"]["op"] == "patch":
                    # a patch states only some attributes: what the index knew of the rest still holds
                    feats = {k: (v if v else entry.features.get(k, v)) for k, v in feats.items()}
                    blocks = sorted(set(entry.blocks) | set(blocks))
                for b in set(entry.blocks) - set(blocks):  # as the link script drops it from them
                    overlay_blocks.get(b, set()).discard(member)
                    changed_blocks.add(b)
                old_terms = flatten(self._term_keys(entry.features))
                record_terms = self._term_keys(feats)
            else:
                old_terms, record_terms = (), self._term_keys(feats)
                if changed_blocks.isdisjoint(blocks):
                    candidate_members = chosen[position]
                else:  # the records decided before it in the batch joined or left its blocks
                    candidate_members = _most_shared([overlay_blocks.get(b, ()) for b in blocks],
                                                     self.rules.max_scored, member)
                apart, pinned = constraints.get(member, ((), ()))
                if member in converted:
                    pinned = {*pinned, converted[member]}
                # a steward's split keeps this record out of golden records holding those it was split from
                forbidden = {entries[m].golden_id for m in apart if m in entries}
                candidates = [Candidate(m, entries[m].golden_id, entries[m].features)
                              for m in candidate_members if m in entries
                              and entries[m].golden_id not in forbidden]
                candidate_counts.append(len(candidates))
                together = sorted({entries[m].golden_id for m in pinned if m in entries} - forbidden)
                if together:  # a steward's link: join those records whatever the scores say
                    decision = Decision(MERGE, together[0], None, together[1:])
                else:
                    decision = decide(member, feats, candidates, self.comparisons, self.rules.upper_threshold,
                                      self.rules.lower_threshold, self.rules.max_candidates,
                                      frequencies=terms.frequencies(record_terms), golden_sizes=sizes,
                                      guardrails=guardrails)
                    if decision.absorbed and constraints:
                        decision = _respect_splits(decision, entries, constraints)
                sizes[decision.golden_id] = 1 + sum(sizes.pop(g, 0) for g in {decision.golden_id, *decision.absorbed})
                for absorbed in decision.absorbed:
                    moved = by_golden.pop(absorbed, [])
                    for other in moved:
                        other.golden_id = decision.golden_id
                    by_golden.setdefault(decision.golden_id, []).extend(moved)
            record_terms = flatten(record_terms)
            terms.replace(old_terms, record_terms)
            entries[member] = MemberEntry(member, decision.golden_id, feats, blocks)
            by_golden.setdefault(decision.golden_id, []).append(entries[member])
            for b in blocks:
                if b in overlay_blocks:
                    overlay_blocks[b].add(member)
                    changed_blocks.add(b)
            # a patch keeps the blocks it had: only those read now can have moved since
            seen = {b: views[b].version for b in blocks if b in views} if verify else {}
            request = LinkRequest(member, decision.golden_id, feats, blocks, decision.absorbed, seen, record_terms)
            planned.append(((member, canonical, decision, skipped), request))
        metrics.observe_all(metrics.CANDIDATES, candidate_counts)
        return items, planned

    def _term_keys(self, feats: dict) -> dict[str, str]:
        return term_keys(self.secret, feats, self.comparisons)

    @property
    def _guarded(self) -> bool:
        return self.rules.max_golden_size is not None or self.rules.max_bridged_size is not None

    async def _tallies_soon(self, items, known: dict[str, MemberEntry]):
        """The index's term counts for the values of these records (and those
        their index entries held), and the sizes of the golden records of the
        records' entries (the candidates' come with them), read with the next
        round trip: a function giving them as (TermCounts, sizes). Both are
        then kept up to date as the batch is decided."""
        wanted: set[str] = set()
        if any(c.term_frequency for c in self.comparisons):
            for member, _, feats, _ in items:
                for held in (feats, known[member].features if member in known else None):
                    if held is not None:
                        wanted.update(flatten(self._term_keys(held)))
        golden_ids = sorted({e.golden_id for e in known.values()}) if self._guarded else []
        tallied = await self.index.tallies_soon(sorted(wanted), golden_ids)

        def counted() -> tuple[TermCounts, dict[str, int]]:
            counts, sizes = tallied()
            return TermCounts(counts), sizes
        return counted

    async def _commit(self, planned) -> int:
        """Apply the index operations in batch order, in one atomic call.
        Returns how many records are done: all, unless another worker changed
        the blocks of one since it was decided."""
        positions = [i for i, (_, op) in enumerate(planned) if op is not None]
        # before the index forgets them: where deleted records were, for a redelivered deletion
        await self.index.remember_deleted_from({op: result[2].golden_id for result, op in planned
                                                if isinstance(op, str)})
        final_ids = await self.index.link([planned[i][1] for i in positions])
        for i, gid in zip(positions, final_ids):
            if not isinstance(planned[i][1], str):
                planned[i][0][2].golden_id = gid
        if len(final_ids) == len(positions):
            return len(planned)
        return positions[len(final_ids)]

    def _outputs(self, member: str, canonical: dict, written: dict, decision: Decision, skipped: int, now_ms: int,
                 explained: dict[str, bytes]):
        """`canonical` opened, `written` as the ingest stage wrote it (sealed, or the same)."""
        topics = self.config.topics
        gid = decision.golden_id
        source, source_id = member.split(":", 1)
        record_event = canonical["record"]["event_time"]
        decision_record = None
        if decision.outcome in (MERGE, REVIEW, NEW):
            decision_record = {
                "decision_id": new_golden_id(f"{member}@{record_event}").replace("G", "D", 1),
                "source": source, "source_id": source_id, "golden_id": gid, "outcome": decision.outcome,
                "score": decision.score, "upper_threshold": self.rules.upper_threshold,
                "lower_threshold": self.rules.lower_threshold, "merged_golden_ids": decision.absorbed,
                "candidates": decision.evidence, "blocking_keys_skipped": skipped, "decided_at": record_event,
                "held_for_review": decision.held_for_review,
            }
            explained[member] = orjson.dumps(decision_record)
            audit = audit_event(decision_record["decision_id"], now_ms, "match_decision", decision.outcome,
                                golden_id=gid, subject=member, decision=(MATCH_DECISION, decision_record))
            yield OutMessage(topics.audit, member.encode(), self.audit.encode(audit))
            if decision.outcome == REVIEW:
                yield OutMessage(topics.review, member.encode(), self.decision_codec.encode(decision_record))
        # the decision travels on the audit topic; the master needs only the link
        if self.hand_on_only:  # to the master step of the same pass (hub.engine): as it would decode and open it
            linked = link_instruction(gid, "contribution", "source_event", canonical=canonical,
                                      absorbed=decision.absorbed)
            yield OutMessage(topics.linked, gid.encode(), None, record=linked)
            return
        linked = link_instruction(gid, "contribution", "source_event", canonical=(CANONICAL, written),
                                  absorbed=decision.absorbed)
        yield OutMessage(topics.linked, gid.encode(), self.linked.encode(linked))
