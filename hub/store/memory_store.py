"""Every port the stages use (hub.ports), in this process's memory.

`MemoryStore` is what `RedisStore` (hub.store.redis) is to
the stages, with nothing at rest: the identity index (`MemoryIndex`, in
hub.store.memory), the golden store, the consent and survey stores, the
syndication state, the schedules (consent, decay), the lookup index and the
data-quality tallies, one class per port here, composed. Each behaves as the
Redis one does for what a stage can observe, operation for operation:

- golden store: a save replaces a golden record whole (contributions, golden
  value, last audit) or deletes it; when each was last confirmed by a source
  (the retention policy's `inactive`, `mark_flagged`); lookup index keys added
  and removed in the same save;
- consent and survey stores: the latest statement per (purpose, channel), the
  latest answer per survey, by its own time, equal times settled by the same
  digest of the item; the same item again counts as a change (a redelivered
  batch must still recompute its golden record), an older one does not;
- syndication state: per golden id and target, (key, projection hash);
- schedules: due times per golden id and kind, the earliest first (ties by
  golden id, as a sorted set), pushed 60 s ahead when taken;
- golden-record leases: all or none per call, renewed by their holder,
  expiring after their time.

Values go in as the JSON Redis holds (sealed there; nothing here outlives the
process, so nothing is sealed) and come out freshly decoded, so a stage gets
the same dicts, in the same key order, from either store and may change them.
One process only: no call awaits before it is done, so each is atomic as the
Redis scripts are. tests/unit/test_memory_store.py runs the pipeline's stages
over both and compares every message they write.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import orjson

from hub.ports import GoldenState, LeaseLost
from hub.quality_tally import MemoryTallyStore
from hub.store.memory import FORWARD_HOPS, MemoryIndex, discard

DUE_DELAY_MS = 60_000  # as RedisStore.take_due: a golden id taken is due again in 60 s unless rescheduled


class MemoryGoldenStore:
    """Golden records (hub.ports.GoldenStore), the activity index behind the
    retention policy, and the lookup index (identifier key -> golden ids)."""

    def __init__(self):
        self._gold: dict[str, dict[str, bytes]] = {}  # gid -> field (c:<member>, golden, audit) -> JSON / audit bytes
        self._activity: dict[str, int] = {}  # gid -> last source event time (live golden records only)
        self._flagged: set[str] = set()
        self._lookup: dict[str, set[str]] = {}  # lookup index key -> golden ids

    async def load_soon(self, golden_ids: list[str]):
        states = await self.load(golden_ids)
        return lambda: states

    async def load(self, golden_ids: list[str]) -> dict[str, GoldenState]:
        states = {}
        for gid in golden_ids:
            fields = self._gold.get(gid, {})
            contributions = {f[2:]: orjson.loads(v) for f, v in fields.items() if f.startswith("c:")}
            golden = orjson.loads(fields["golden"]) if "golden" in fields else None
            states[gid] = GoldenState(gid, contributions, golden, fields.get("audit"))
        return states

    async def save(self, states: list[GoldenState], deleted: list[str],
                   lookup: dict[str, tuple[set[str], set[str]]] | None = None, holds=None) -> None:
        """`holds(gid) -> bool`: whether the writer still holds the record's lease (None: no lease);
        the records it does not hold are left as they are, and LeaseLost raised, as Redis's fenced write."""
        for gid, (removed, added) in (lookup or {}).items():
            for key in removed:
                discard(self._lookup, key, gid)
            for key in added:
                self._lookup.setdefault(key, set()).add(gid)
        for state in states:
            if state.golden is not None:
                self._activity[state.golden_id] = state.golden["last_event_time"]
                self._flagged.discard(state.golden_id)
        for gid in deleted:
            self._activity.pop(gid, None)
            self._flagged.discard(gid)
        lost = [gid for gid in [*(s.golden_id for s in states), *deleted] if holds is not None and not holds(gid)]
        for state in states:  # each record replaced whole; one left with no field is gone
            if state.golden_id in lost:
                continue
            fields = {f"c:{m}": orjson.dumps(c) for m, c in state.contributions.items()}
            if state.golden is not None:
                fields["golden"] = orjson.dumps(state.golden)
            if state.last_audit is not None:
                fields["audit"] = state.last_audit
            if fields:
                self._gold[state.golden_id] = fields
            else:
                self._gold.pop(state.golden_id, None)
        for gid in deleted:  # syndication state stays: the syndicate stage tombstones from it
            if gid not in lost:
                self._gold.pop(gid, None)
        if lost:
            raise LeaseLost(f"{len(lost)} golden records' leases lost before they were saved")

    async def inactive(self, before_ms: int, limit: int = 1000) -> list[str]:
        """Golden ids with no source event since `before_ms`, not flagged yet (the oldest first)."""
        found = sorted((at, gid) for gid, at in self._activity.items() if at <= before_ms)[:limit * 4]
        return [gid for _, gid in found if gid not in self._flagged][:limit]

    async def mark_flagged(self, golden_ids: list[str]) -> None:
        self._flagged.update(golden_ids)

    async def golden(self, gid: str) -> dict | None:
        raw = self._gold.get(gid, {}).get("golden")
        return orjson.loads(raw) if raw else None

    async def goldens(self, golden_ids: list[str]) -> dict[str, dict | None]:
        return {gid: await self.golden(gid) for gid in golden_ids}

    async def golden_count(self) -> int:
        return len(self._activity)

    def lookup_ids(self, index_key: str, limit: int) -> list[str]:
        """Up to `limit` golden ids found by one lookup index key (Redis: a random few)."""
        return sorted(self._lookup.get(index_key, ()))[:limit]

    def golden_values(self, golden_ids: list[str]) -> list[dict]:
        """The golden records held under these ids, by golden id."""
        raws = (self._gold.get(gid, {}).get("golden") for gid in golden_ids)
        return sorted((orjson.loads(raw) for raw in raws if raw), key=lambda g: g["golden_id"])

    def all_golden(self, batch: int = 1000):
        """Every golden record held (for `hub reindex-lookups`)."""
        for fields in list(self._gold.values()):
            if "golden" in fields:
                yield orjson.loads(fields["golden"])

    def add_lookup_keys(self, keys: dict[str, set[str]]) -> None:
        for gid, found in keys.items():
            for key in found:
                self._lookup.setdefault(key, set()).add(gid)


class MemoryLatestStore:
    """Per member, the latest item per slot by the item's own time: the Redis
    stores' `_PUT_LATEST` script. `slot(item)` names the slot, `item[at]` is its time."""

    def __init__(self, slot, at: str):
        self._slot = slot
        self._at = at
        self._held: dict[str, dict[str, tuple[int, str, bytes]]] = {}  # member -> slot -> (time, tie, JSON)

    def put(self, items: dict[str, list[dict]]) -> dict[str, bool]:
        changed = {}
        for member, found in items.items():
            if not found:
                continue
            held = self._held.setdefault(member, {})
            did = False
            for item in found:
                slot = self._slot(item)
                body = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
                # equal times: the greater digest of the item wins, whichever worker or order sees it
                tie = hashlib.blake2s(body, digest_size=8).hexdigest()
                at = item[self._at]
                held_at, held_tie, _ = held.get(slot, (-1, "", b""))
                if at > held_at or (at == held_at and tie > held_tie):
                    held[slot] = (at, tie, body)
                    did = True
                elif at == held_at and tie == held_tie:
                    did = True  # the same item again: maybe a retried batch whose first pass stored it
            if not held:
                del self._held[member]
            changed[member] = did
        return changed

    def get(self, members: list[str]) -> dict[str, list[dict]]:
        """Each member's items, by slot (empty: none held)."""
        return {m: [orjson.loads(body) for _, (_, _, body) in sorted(self._held.get(m, {}).items())]
                for m in members}

    def forget(self, members: list[str]) -> None:
        for member in members:
            self._held.pop(member, None)


class MemoryConsentStore:
    """Consent statements (hub.ports.ConsentStore): the latest per (purpose, channel) by event_time."""

    def __init__(self):
        self._latest = MemoryLatestStore(lambda st: f"{st['purpose']}|{st['channel']}", "event_time")

    async def put(self, statements: dict[str, list[dict]]) -> dict[str, bool]:
        return self._latest.put(statements)

    async def put_later(self, statements: dict[str, list[dict]]) -> None:
        self._latest.put(statements)

    async def get(self, members: list[str]) -> dict[str, list[dict]]:
        return self._latest.get(members)

    async def get_soon(self, members: list[str]):
        found = self._latest.get(members)
        return lambda: found

    async def forget(self, members: list[str]) -> None:
        self._latest.forget(members)


class MemorySurveyStore:
    """Survey answers (hub.ports.SurveyStore): the latest per survey by responded_at."""

    def __init__(self):
        self._latest = MemoryLatestStore(lambda a: a["survey_id"], "responded_at")

    async def put_surveys(self, answers: dict[str, list[dict]]) -> dict[str, bool]:
        return self._latest.put(answers)

    async def get_surveys(self, members: list[str]) -> dict[str, list[dict]]:
        return {m: found for m, found in self._latest.get(members).items() if found}

    async def forget_surveys(self, members: list[str]) -> None:
        self._latest.forget(members)


class MemorySchedules:
    """When each golden record is next due, per kind (consent, decay): the Redis `hub:<kind>:due` sorted sets."""

    def __init__(self):
        self._due: dict[str, dict[str, int]] = {}  # kind -> gid -> due time

    async def schedule(self, due: dict[str, int | None], kind: str = "consent") -> None:
        held = self._due.setdefault(kind, {})
        for gid, at in due.items():
            if at is None:
                held.pop(gid, None)
            else:
                held[gid] = at

    async def take_due(self, now_ms: int, limit: int = 1000, kind: str = "consent") -> list[str]:
        """Golden ids due by now, the earliest first; pushed 60 s ahead, not removed (as Redis)."""
        held = self._due.get(kind, {})
        found = [gid for _, gid in sorted((at, gid) for gid, at in held.items() if at <= now_ms)[:limit]]
        for gid in found:
            held[gid] = now_ms + DUE_DELAY_MS
        return found


class MemorySyndicationState:
    """What each target last received per golden id (hub.ports.SyndicationState, without the schedules)."""

    def __init__(self):
        self._synd: dict[str, dict[str, str]] = {}  # gid -> target -> "<key>\x1f<projection hash>"

    async def load_syndication_soon(self, golden_ids: list[str]):
        held = await self.load_syndication(golden_ids)
        return lambda: held

    async def load_syndication(self, golden_ids: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
        # split as the Redis store splits its sealed value, so both give the same tuples
        return {gid: {t: tuple(v.split("\x1f", 1)) for t, v in self._synd.get(gid, {}).items()} for gid in golden_ids}

    async def save_syndication(self, updates: dict[str, dict[str, tuple[str, str] | None]]) -> None:
        for gid, per_target in updates.items():
            held = self._synd.setdefault(gid, {})
            for target, value in per_target.items():
                if value is None:
                    held.pop(target, None)
                else:
                    held[target] = f"{value[0]}\x1f{value[1]}"
            if not held:
                del self._synd[gid]


class MemoryLeases:
    """Golden-record leases (hub.ports.GoldenLeases), expiring on the monotonic clock as Redis's do."""

    def __init__(self):
        self._held: dict[str, tuple[str, float]] = {}  # gid -> (owner, expires at, time.monotonic())
        self._waiting: dict[str, list[asyncio.Future]] = {}  # gid refused -> its waiters, woken by the release

    async def lease(self, golden_ids: list[str], owner: str, ttl_ms: int) -> list[str]:
        now = time.monotonic()
        refused = [gid for gid in golden_ids if (held := self._held.get(gid)) and held[0] != owner and held[1] > now]
        if not refused:
            self._held.update({gid: (owner, now + ttl_ms / 1000) for gid in golden_ids})
        for gid in refused:  # as the Redis script notes a waiter with the refusal
            self._waiting.setdefault(gid, [])
        return refused

    async def lease_soon(self, golden_ids: list[str], owner: str, ttl_ms: int):
        refused = await self.lease(golden_ids, owner, ttl_ms)
        return lambda: refused

    async def release(self, golden_ids: list[str], owner: str) -> None:
        for gid in golden_ids:
            if self._held.get(gid, ("",))[0] == owner:
                del self._held[gid]
                for waiter in self._waiting.pop(gid, ()):
                    if not waiter.done() and not waiter.get_loop().is_closed():
                        waiter.set_result(None)

    async def wait_released(self, golden_id: str, timeout_s: float) -> bool:
        waiters = self._waiting.get(golden_id)
        if waiters is None:  # given back since the refusal (Redis keeps that signal a second)
            return True
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except asyncio.TimeoutError:
            return False
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
        return True

    def holds(self, gid: str, owner: str) -> bool:
        """Whether `owner` holds the record's lease now (an expired one is nobody's; Redis forgets it)."""
        held = self._held.get(gid)
        return held is not None and held[0] == owner and held[1] > time.monotonic()


class MemoryStore(MemoryIndex):
    """All of the ports RedisStore serves, in memory: the identity index (this
    class is a MemoryIndex), and the golden store, consent and survey stores,
    syndication state, schedules and quality tallies it is composed of.
    `hub.dataflow.stage_runners(pipeline, MemoryStore(), sink, secret)` runs
    the whole pipeline on it."""

    def __init__(self):
        super().__init__()
        self.golden_store = MemoryGoldenStore()
        self.consents = MemoryConsentStore()
        self.surveys = MemorySurveyStore()
        self.syndication = MemorySyndicationState()
        self.schedules = MemorySchedules()
        self.quality_tallies = MemoryTallyStore()  # the ingest stage's data-quality counters
        self.leases = MemoryLeases()

    # golden-record leases
    async def lease(self, golden_ids: list[str], owner: str, ttl_ms: int) -> list[str]:
        return await self.leases.lease(golden_ids, owner, ttl_ms)

    async def lease_soon(self, golden_ids: list[str], owner: str, ttl_ms: int):
        return await self.leases.lease_soon(golden_ids, owner, ttl_ms)

    async def release(self, golden_ids: list[str], owner: str) -> None:
        await self.leases.release(golden_ids, owner)

    async def wait_released(self, golden_id: str, timeout_s: float) -> bool:
        return await self.leases.wait_released(golden_id, timeout_s)

    # golden store
    async def load(self, golden_ids: list[str]) -> dict[str, GoldenState]:
        return await self.golden_store.load(golden_ids)

    async def load_soon(self, golden_ids: list[str]):
        return await self.golden_store.load_soon(golden_ids)

    async def save(self, states: list[GoldenState], deleted: list[str],
                   lookup: dict[str, tuple[set[str], set[str]]] | None = None, lease_owner: str | None = None) -> None:
        holds = None if lease_owner is None else (lambda gid: self.leases.holds(gid, lease_owner))
        await self.golden_store.save(states, deleted, lookup, holds)

    async def inactive(self, before_ms: int, limit: int = 1000) -> list[str]:
        return await self.golden_store.inactive(before_ms, limit)

    async def mark_flagged(self, golden_ids: list[str]) -> None:
        await self.golden_store.mark_flagged(golden_ids)

    async def golden(self, gid: str) -> dict | None:
        return await self.golden_store.golden(gid)

    async def goldens(self, golden_ids: list[str]) -> dict[str, dict | None]:
        return await self.golden_store.goldens(golden_ids)

    async def golden_count(self) -> int:
        return await self.golden_store.golden_count()

    def lookup(self, golden_id: str | None = None, index_key: str | None = None, limit: int = 10) -> list[dict]:
        """Golden records by golden id (its survivor if merged away) or by a lookup index key."""
        if golden_id is not None:
            survivor, hops = golden_id, 0
            while survivor in self._fwd and hops < FORWARD_HOPS:
                survivor, hops = self._fwd[survivor], hops + 1
            return self.golden_store.golden_values([survivor])
        return self.golden_store.golden_values(self.golden_store.lookup_ids(index_key, limit))

    def all_golden(self, batch: int = 1000):
        return self.golden_store.all_golden(batch)

    def add_lookup_keys(self, keys: dict[str, set[str]]) -> None:
        self.golden_store.add_lookup_keys(keys)

    def golden_sizes(self, sample: int = 2000) -> list[int]:
        """Members per golden record, for a random sample of the live golden records."""
        live = list(self.golden_store._activity)
        return [len(self._gm.get(gid, ())) for gid in random.sample(live, min(sample, len(live)))]

    # consent store
    async def put(self, statements: dict[str, list[dict]]) -> dict[str, bool]:
        return await self.consents.put(statements)

    async def put_later(self, statements: dict[str, list[dict]]) -> None:
        await self.consents.put_later(statements)

    async def get(self, members: list[str]) -> dict[str, list[dict]]:
        return await self.consents.get(members)

    async def get_soon(self, members: list[str]):
        return await self.consents.get_soon(members)

    async def forget(self, members: list[str]) -> None:
        await self.consents.forget(members)

    # survey store
    async def put_surveys(self, answers: dict[str, list[dict]]) -> dict[str, bool]:
        return await self.surveys.put_surveys(answers)

    async def get_surveys(self, members: list[str]) -> dict[str, list[dict]]:
        return await self.surveys.get_surveys(members)

    async def forget_surveys(self, members: list[str]) -> None:
        await self.surveys.forget_surveys(members)

    # syndication state and schedules
    async def load_syndication(self, golden_ids: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
        return await self.syndication.load_syndication(golden_ids)

    async def load_syndication_soon(self, golden_ids: list[str]):
        return await self.syndication.load_syndication_soon(golden_ids)

    async def save_syndication(self, updates: dict[str, dict[str, tuple[str, str] | None]]) -> None:
        await self.syndication.save_syndication(updates)

    async def schedule(self, due: dict[str, int | None], kind: str = "consent") -> None:
        await self.schedules.schedule(due, kind)

    async def take_due(self, now_ms: int, limit: int = 1000, kind: str = "consent") -> list[str]:
        return await self.schedules.take_due(now_ms, limit, kind)
