"""Master stage: linked records to golden records, with audit.

Keeps each member's latest contribution in the golden store, folds in
golden records merged away, and recomputes the golden record with
survivorship. A redelivered input leaves the store as it was and re-emits
the same golden value (and the same audit id), so outputs lost in a crash
are sent again and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from hub import history, lookup, metrics
from hub.config import PipelineConfig
from hub.crypto import Keyring
from hub.messages import audit_event
from hub.ports import ConsentStore, GoldenLeases, GoldenState, GoldenStore, IdentityIndex, LeaseLost, SurveyStore
from hub.records import REASON_HEADER, InMessage, OutMessage, member_key
from hub.schemas import AUDIT, GOLDEN, LINKED, codec
from hub.stages import StageOutput
from hub.survivorship import build_golden, changed_attributes, merge_contribution, next_stale_ms, stamp
from hub.topic_seal import TopicValues, open_linked

STAGE = "master"
# How long at most a pass refused a lease waits for its holder's release before it tries again: the release
# wakes it at once, so this bounds only a holder that died (its lease lapses) or renews through a long delivery,
# or a signal lost (Redis away)
LEASE_WAIT_MAX_S = 0.16
_CHANGES = {kind: metrics.GOLDEN_CHANGES.labels(kind) for kind in ("golden_created", "golden_updated")}
_LEASE_WAIT_ENDS = {True: metrics.GOLDEN_LEASE_WAIT_ENDS.labels("released"),
                    False: metrics.GOLDEN_LEASE_WAIT_ENDS.labels("timed_out")}


class GoldenClaims:
    """The golden records the passes of one lease owner (one worker: its hot path, its consent, survey and
    schedule passes) hold now. They share the owner's leases in Redis, where they cannot refuse each other,
    so they take turns here instead: a pass waits for the very pass that holds what it wants, and takes all
    it wants at once, holding nothing while it waits (two passes never wait on each other)."""

    _of_owner: dict[str, "GoldenClaims"] = {}

    @classmethod
    def of_owner(cls, owner: str) -> "GoldenClaims":
        return cls._of_owner.setdefault(owner, cls())

    def __init__(self):
        self._held: dict[str, asyncio.Future] = {}  # golden id -> resolved when its pass gives it back
        self._loop = None

    async def take(self, golden_ids: list[str]) -> asyncio.Future:
        """Wait until none of `golden_ids` is held by another pass, then hold them all; the token returned
        gives them back (`give_back`)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # what a finished event loop's passes held is held by nobody
            self._held, self._loop = {}, loop
        while True:
            busy = {self._held[gid] for gid in golden_ids if gid in self._held}
            if not busy:
                break
            metrics.GOLDEN_CLAIM_WAITS.inc()
            await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
        token = loop.create_future()
        for gid in golden_ids:
            self._held[gid] = token
        return token

    def give_back(self, golden_ids: list[str], token: asyncio.Future | None) -> None:
        if token is None or token.done():
            return
        for gid in golden_ids:
            if self._held.get(gid) is token:
                del self._held[gid]
        if not token.get_loop().is_closed():
            token.set_result(None)


def _audit_id(golden_id: str, version: int | None, kind: str) -> str:
    return "A" + hashlib.blake2s(f"{golden_id}|{version}|{kind}".encode(), digest_size=10).hexdigest()


def _event_clock(content: dict, previous: dict | None) -> int:
    """`updated_at` of a golden record: the latest event time behind it (source
    events, consent statements), never the wall clock, so replaying the same
    events gives byte-identical golden records; never earlier than before."""
    latest = max([content["last_event_time"], *(c["statement"]["event_time"] for c in content["consents"])])
    return max(latest, previous["updated_at"]) if previous else latest


class MasterStage:
    def __init__(self, config: PipelineConfig, index: IdentityIndex, store: GoldenStore, consents: ConsentStore,
                 secret: bytes, surveys: SurveyStore, topic_keyring: Keyring | None = None,
                 leases: GoldenLeases | None = None, lease_owner: str | None = None, lease_ttl_ms: int = 30_000):
        """`topic_keyring`: seals the personal fields of the golden records and audit events written
        (hub.topic_seal, HUB_SEAL_TOPICS); None writes them in clear. The canonical records carried by the
        linked records read are opened with it (or the store's keyring).

        `leases`: where no partition gives each golden record one master (the fused engine, hub.engine), a
        pass takes the lease of every golden record it will read, as `lease_owner`, before it reads them, and
        gives them back once its outputs are delivered (StageOutput.after_delivery)."""
        self.config = config
        self.leases = leases
        self.lease_owner = lease_owner
        # what the step after this one in a pass reads of the golden records handed on (hub.dataflow wires the
        # syndicate step's): given them before the save, so that read goes out with the save's round trip
        self.read_ahead = None
        self.lease_ttl_ms = lease_ttl_ms
        self.surveys = surveys
        self.secret = secret  # the PII key: lookup index keys are keyed hashes
        self.index = index
        self.store = store
        self.consents = consents
        self.linked = codec(LINKED)
        self.golden_values = TopicValues(GOLDEN, config.topics.golden, topic_keyring)
        self.audit_values = TopicValues(AUDIT, config.topics.audit, topic_keyring)
        self.open_with = topic_keyring or getattr(store, "keyring", None)  # values sealed before stay readable

    async def process(self, batch: list[InMessage], now_ms: int | None = None) -> StageOutput:
        now_ms = now_ms or int(time.time() * 1000)
        # the canonical record of a contribution as the ingest stage wrote it: opened here (hub.topic_seal)
        # handed on in the pass (hub.engine), or as the match stage wrote it
        linked = [m.record if m.record is not None else
                  open_linked(self.open_with, self.linked.decode(m.value), self.config.topics.canonical)
                  for m in batch]
        if self.leases is None:
            return await self._master(linked, now_ms, *await self._golden_ids(linked))
        claims = GoldenClaims.of_owner(self.lease_owner)
        held: list[str] = []
        token = None
        # the golden ids the linked records name: what the batch needs unless one was merged away since,
        # leased with the first read, so a pass usually takes its leases and its plan in one round trip
        wanted = sorted({gid for x in linked for gid in (x["golden_id"], *x["absorbed_golden_ids"])}
                        | {x["split_to"] for x in linked if x["kind"] == "split"})
        try:
            while True:  # lease what the batch needs; what it needs is read again under the leases
                token = await claims.take(wanted)  # all at once, holding nothing while waiting
                held = wanted
                # taken in the round trip of the read, ahead of it (Redis runs them in order), and the records
                # loaded in it too, under the leases: what the master step reads, unless the read finds that
                # the batch needs records beyond them (merged away, folds pending)
                leased = await self.leases.lease_soon(wanted, self.lease_owner, self.lease_ttl_ms)
                preread = (set(wanted), await self.store.load_soon(wanted), await self._tombstones_soon(linked))
                plan = await self._golden_ids(linked)
                refused = leased()
                if refused:  # another worker's: the lease call gave back what it took
                    claims.give_back(held, token)
                    held, token = [], None
                    metrics.GOLDEN_LEASE_WAITS.inc()
                    # woken by the holder's release (hub.ports.GoldenLeases.wait_released)
                    _LEASE_WAIT_ENDS[await self.leases.wait_released(refused[0], LEASE_WAIT_MAX_S)].inc()
                    wanted = sorted(plan[-1])
                    continue
                if plan[-1] <= set(held):
                    break
                wanted = sorted(plan[-1] | set(held))
                claims.give_back(held, token)
                held, token = [], None
            output = await self._master(linked, now_ms, *plan, preread=preread)
        except BaseException:
            await self._give_back(claims, held, token)
            raise
        settle = output.after_delivery

        async def settle_and_release() -> None:
            try:
                await settle()
            finally:
                await self._give_back(claims, held, token)

        async def renew() -> None:
            """Held through a long delivery, so no other pass writes these records' next versions to the
            topics before this one's; found taken (this worker stalled past the lease), the batch is retried."""
            if await self.leases.lease(held, self.lease_owner, self.lease_ttl_ms):
                raise LeaseLost(f"golden-record leases lapsed while delivering ({len(held)} held)")

        async def abandon() -> None:
            await self._give_back(claims, held, token)
        output.after_delivery = settle_and_release
        output.keep_alive = renew
        output.abandon = abandon
        return output

    async def _give_back(self, claims: GoldenClaims, held: list[str], token) -> None:
        """The leases, then this worker's claims, even when Redis cannot be told: the worker's own passes
        may take them at once (they share its lease owner), another worker once the leases lapse."""
        try:
            await self.leases.release(held, self.lease_owner)
        finally:
            claims.give_back(held, token)

    async def _golden_ids(self, linked: list[dict]):
        """Where the batch's golden ids stand now: each one's survivor, the merges to fold in, and every
        golden id the batch will read."""
        # merges the index made whose linked record a crash may have lost are folded in too
        survivors, folds, below = await self.index.survivors_and_folds(sorted({x["golden_id"] for x in linked}))
        done_folds = dict(folds)
        root = {a: gid for gid, absorbed in folds.items() for a in absorbed}
        while root.keys() - done_folds.keys():  # a merged-away record may itself have absorbed others
            unread = sorted(root.keys() - done_folds.keys())
            if below.keys() >= set(unread):  # read with the survivors, as deep as the read went
                deeper = {gid: below[gid] for gid in unread if below[gid]}
            else:
                deeper = await self.index.pending_folds(unread)
            done_folds.update(dict.fromkeys(root.keys() - done_folds.keys(), []), **deeper)
            for parent, absorbed in deeper.items():
                folds[root[parent]] = [*folds[root[parent]], *absorbed]
                root.update(dict.fromkeys(absorbed, root[parent]))
        needed = set(survivors.values()) | {a for x in linked for a in x["absorbed_golden_ids"]}
        needed |= {a for absorbed in folds.values() for a in absorbed}
        needed |= {x["split_to"] for x in linked if x["kind"] == "split"}
        return survivors, folds, done_folds, needed

    async def _tombstones_soon(self, linked: list[dict]):
        # a record its source deleted stays deleted for every older event, however the
        # inputs interleave: an event linked under a golden id that merged elsewhere can
        # reach this stage after the deletion linked under the survivor (another partition)
        stated = sorted({member_key(x["canonical"]["record"]["source"], x["canonical"]["record"]["source_id"])
                         for x in linked if x["canonical"] and x["canonical"]["record"]["op"] != "delete"})
        return await self.index.tombstones_soon(stated)

    async def _master(self, linked: list[dict], now_ms: int, survivors: dict[str, str], folds: dict[str, list[str]],
                      done_folds: dict[str, list[str]], needed: set[str], preread=None) -> StageOutput:
        """`preread`: (golden ids, their states, the tombstones) as read with the leases, or None."""
        if preread is not None and needed <= preread[0]:
            loaded, deleted_at_soon = preread[1](), preread[2]
            states = {gid: loaded[gid] for gid in sorted(needed)}
        else:
            deleted_at_soon = await self._tombstones_soon(linked)  # read with the load's round trip
            states = await self.store.load(sorted(needed))
        before = {gid: state.golden for gid, state in states.items()}
        # contributions are replaced, never mutated: a shallow copy tells what changed
        held = {gid: dict(state.contributions) for gid, state in states.items()}

        embedded = {}
        for item in linked:
            canonical = item["canonical"]
            if canonical and canonical["record"]["consents"]:
                record = canonical["record"]
                embedded.setdefault(member_key(record["source"], record["source_id"]), []).extend(record["consents"])
        await self.consents.put_later(embedded)  # nothing read of it: with the next round trip
        deleted_at = deleted_at_soon()

        out: list[OutMessage] = []
        touched: dict[str, dict] = {}  # gid -> the last input that touched it
        absorbed_ids: set[str] = set()
        erased: dict[str, tuple[str, list[str]]] = {}  # gid -> (cause, members)
        for item in linked:
            gid = survivors[item["golden_id"]]
            state = states[gid]
            for absorbed in [*item["absorbed_golden_ids"], *folds.pop(gid, ())]:
                if absorbed == gid or absorbed not in states:
                    continue
                gone = states[absorbed]
                for member, contribution in gone.contributions.items():
                    # a member's newer event may have reached the survivor first (it was
                    # forwarded there while this merge waited on another partition)
                    mine = state.contributions.get(member)
                    if mine is None or mine["record"]["event_time"] <= contribution["record"]["event_time"]:
                        state.contributions[member] = contribution
                gone.contributions = {}
                absorbed_ids.add(absorbed)
            canonical = item["canonical"]
            if item["kind"] == "split":
                # a steward's split: the record's contribution moves with it
                moved = state.contributions.pop(item["split_member"], None)
                target = states[item["split_to"]]
                if moved is not None:
                    target.contributions[item["split_member"]] = moved
                if item["split_member"] in target.contributions:  # moved now, or before a crash lost the output
                    touched[item["split_to"]] = item
            if item["kind"] == "erase":
                erased[gid] = (item["cause"], sorted(state.contributions))
                state.contributions = {}
            elif canonical is not None:
                record = canonical["record"]
                if record["op"] == "delete" or deleted_at.get(
                        member_key(record["source"], record["source_id"]), -1) < record["event_time"]:
                    erased.pop(gid, None)  # a later event starts the customer again, from nothing
                    self._apply(state, canonical)
            touched[gid] = item

        members = sorted({m for gid in touched for m in states[gid].contributions})
        statements_soon = await self.consents.get_soon(members)  # read with the surveys' round trip
        answers = await self.surveys.get_surveys(members)
        statements = statements_soon()
        # B2B: each contact's account, by the golden record its organisation record belongs to now
        refs = sorted({c["record"].get("account_ref") for gid in touched for c in states[gid].contributions.values()}
                      - {None})
        accounts = {m: e.golden_id for m, e in (await self.index.members(refs)).items()}
        saved: list[GoldenState] = []
        deleted: list[str] = []
        mastered: dict[str, dict] = {}  # gid -> its golden record now, changed or not
        for gid, item in touched.items():
            state = states[gid]
            previous = before[gid]
            if gid in erased:
                cause, members = erased[gid]
                if not members:  # erased from the store before a crash lost the outputs: the index still knows
                    members = await self.index.golden_members(gid)
                    erased[gid] = (cause, members)
                deleted.append(gid)
                out.extend(self._erase(gid, members, cause, now_ms))
                continue
            if not state.contributions:
                if previous is not None:
                    deleted.append(gid)
                    out.extend(self._gone(gid, previous, "member_withdrawn", now_ms))
                else:  # gone from the store already: a crash may have lost the tombstone, send it again
                    out.append(self._tombstone(gid, "member_withdrawn"))
                    deleted.append(gid)  # and may have left what is derived from it (activity, schedules)
                continue
            canonical = item["canonical"]
            produced_at = canonical["origin"]["produced_at"] if canonical else None
            cause = item["cause"]  # source_event, consent_changed, survey_received, a steward's split...
            content = build_golden(gid, state.contributions,
                                   {m: statements.get(m, []) for m in state.contributions}, self.config.survivorship,
                                   {m: answers[m] for m in state.contributions if m in answers}, now_ms,
                                   accounts, self.secret)
            golden = stamp(content, previous, _event_clock(content, previous), cause, produced_at)
            if golden is not previous:
                kind = "golden_created" if previous is None else "golden_updated"
                _CHANGES[kind].inc()
                subject = None
                if canonical:
                    subject = member_key(canonical["record"]["source"], canonical["record"]["source_id"])
                audit = audit_event(_audit_id(gid, golden["version"], kind), now_ms, kind, cause, golden_id=gid,
                                    subject=subject, before_version=previous["version"] if previous else None,
                                    after_version=golden["version"],
                                    changed_attributes=changed_attributes(previous, golden),
                                    changes=history.diff(previous, golden))
                state.last_audit = self.audit_values.encode(audit, gid)
            if golden is not previous or state.contributions != held[gid]:
                state.golden = golden
                saved.append(state)  # a redelivered input rewrites nothing
            if state.last_audit:
                out.append(OutMessage(self.config.topics.audit, gid.encode(), state.last_audit))
            mastered[gid] = golden
            out.append(OutMessage(self.config.topics.golden, gid.encode(), self.golden_values.encode(golden, gid),
                                  record=golden))
        for absorbed in sorted(absorbed_ids - touched.keys()):
            previous = before.get(absorbed)
            deleted.append(absorbed)
            if previous is not None:
                metrics.MERGES.inc()
                out.extend(self._gone(absorbed, previous, "golden_merged", now_ms))
            else:  # merged before a crash that may have lost the tombstone: idempotent, send it again
                out.append(self._tombstone(absorbed, "golden_merged"))
        erased_members = [m for _, members in erased.values() for m in members]
        # the lookup index follows the golden records: an erased or merged-away
        # customer can no longer be found by any of its identifiers
        lookups = {s.golden_id: lookup.changes(before.get(s.golden_id), s.golden, self.secret) for s in saved}
        lookups.update({gid: lookup.changes(before.get(gid), None, self.secret) for gid in deleted})
        if self.read_ahead is not None:  # the next step's read, carried by the save's round trip
            await self.read_ahead({m.key.decode(): m.record for m in out if m.topic == self.config.topics.golden})
        await self.store.save(saved, deleted, {g: c for g, c in lookups.items() if c[0] or c[1]},
                              lease_owner=self.lease_owner if self.leases is not None else None)
        # data decay: recompute each record when its next value goes stale, with no new event needed
        stale_after = self.config.survivorship.stale_after_days
        decay = {gid: next_stale_ms(golden, stale_after) for gid, golden in mastered.items()}
        decay.update({gid: None for gid in deleted})
        folded = {gid: absorbed for gid, absorbed in done_folds.items() if absorbed}

        async def settle() -> None:
            """What says work is still to do is cleared only once the outputs are delivered: a pass
            retried after a crash (where no linked record is redelivered: the fused engine) finds the
            merges still to fold in, the erased records still linked, a timer's recompute still due."""
            await self.index.forget_references(erased_members)
            await self.index.unlink(erased_members)
            await self.consents.forget(erased_members)
            await self.surveys.forget_surveys(erased_members)
            await self.store.schedule(decay, "decay")
            await self.index.folded(folded)
        return StageOutput(out, settle)

    def _erase(self, gid: str, members: list[str], cause: str, now_ms: int):
        """Tombstones wherever the customer was, and one audit entry with
        nothing personal in it: a hash of the golden id, the time, the requester."""
        hashed = "H" + hashlib.blake2s(gid.encode(), digest_size=10).hexdigest()
        audit = audit_event(_audit_id(hashed, None, "erased"), now_ms, "erased", cause, golden_id=hashed)
        metrics.ERASURES.labels("erased").inc()
        yield OutMessage(self.config.topics.audit, hashed.encode(), self.audit_values.encode(audit, hashed))
        for member in members:
            yield OutMessage(self.config.topics.canonical, member.encode(), None, [(REASON_HEADER, b"erased")])
        yield OutMessage(self.config.topics.golden, gid.encode(), None, [(REASON_HEADER, b"erased")])

    @staticmethod
    def _apply(state: GoldenState, canonical: dict) -> None:
        record = canonical["record"]
        member = member_key(record["source"], record["source_id"])
        held = state.contributions.get(member)
        if record["op"] == "delete":
            if held is None or held["record"]["event_time"] <= record["event_time"]:
                state.contributions.pop(member, None)
            return
        # per attribute, the newer statement wins: an older event arriving late undoes nothing newer,
        # and a patch changes only what it carries
        state.contributions[member] = merge_contribution(
            held, {k: v for k, v in record.items() if k != "consents"}, canonical["quality"])

    def _gone(self, gid: str, previous: dict, kind: str, now_ms: int):
        audit = audit_event(_audit_id(gid, previous["version"] + 1, kind), now_ms, kind, kind, golden_id=gid,
                            before_version=previous["version"])
        if kind == "member_withdrawn":
            metrics.GOLDEN_CHANGES.labels("golden_deleted").inc()
        yield OutMessage(self.config.topics.audit, gid.encode(), self.audit_values.encode(audit, gid))
        yield self._tombstone(gid, kind)

    def _tombstone(self, gid: str, kind: str) -> OutMessage:
        return OutMessage(self.config.topics.golden, gid.encode(), None, [(REASON_HEADER, kind.encode())])

