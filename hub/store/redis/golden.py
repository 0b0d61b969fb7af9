"""The golden store (hub.ports.GoldenStore) in Redis: one hash per golden
record (`hub:gold:{<gid>}`: sealed contributions, golden record, last audit
event), saved in an order a crash can stop anywhere, with the lookup keys and
activity derived from it; and reads of every golden record held.
"""

from __future__ import annotations

import orjson
import redis
from redis.cluster import RedisCluster

from hub.crypto import Keyring
from hub.ports import GoldenState, LeaseLost
from hub.store.redis import scripts
from hub.store.redis.keys import P, gm_key, gold_key, lease_key, lookup_key
from hub.store.redis.schedules import RedisSchedules


class RedisGoldenStore(RedisSchedules):
    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        super().__init__(client, keyring)
        # id(contribution) -> (contribution, where, ciphertext) as loaded; holding the object keeps its id unique
        self._sealed: dict[int, tuple[dict, str, bytes]] = {}
        self._replace = self._script(scripts.REPLACE)

    def _reseal(self, contribution: dict, key: str, field: str) -> bytes:
        """Contributions are replaced, never mutated: one saved where it was
        loaded keeps its ciphertext (no encryption for unchanged members)."""
        held = self._sealed.pop(id(contribution), None)
        if held is not None and held[0] is contribution and held[1] == f"{key}|{field}" \
                and self.keyring.is_current(held[2]):
            return held[2]
        return self._seal(orjson.dumps(contribution), key, field)

    async def load(self, golden_ids: list[str]) -> dict[str, GoldenState]:
        return (await self.load_soon(golden_ids))()

    async def load_soon(self, golden_ids: list[str]):
        self._sealed.clear()  # one batch's worth at most; another stage loading in between only costs a re-seal
        if not golden_ids:
            return dict
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.hgetall(gold_key(gid))
        replies = self._soon(pipe, "golden_load")
        return lambda: self._states(golden_ids, replies())

    def _states(self, golden_ids: list[str], replies: list) -> dict[str, GoldenState]:
        states = {}
        for gid, fields in zip(golden_ids, replies):
            key = gold_key(gid)
            contributions = {}
            for k, v in fields.items():
                if k.startswith(b"c:"):
                    contribution = contributions[k[2:].decode()] = orjson.loads(self._open(v, key, k.decode()))
                    self._sealed[id(contribution)] = (contribution, f"{key}|{k.decode()}", v)
            golden = orjson.loads(self._open(fields[b"golden"], key, "golden")) if b"golden" in fields else None
            audit = self._open(fields[b"audit"], key, "audit") if b"audit" in fields else None
            states[gid] = GoldenState(gid, contributions, golden, audit)
        return states

    async def save(self, states: list[GoldenState], deleted: list[str],
                   lookup: dict[str, tuple[set[str], set[str]]] | None = None, lease_owner: str | None = None) -> None:
        """In an order a crash can stop anywhere: a retried batch finds each
        golden record as it was or as it is now, never half written. What is
        derived from the records (lookup keys, activity) goes first, since a
        retry that finds a record already written derives nothing; merged-away
        records go last, once the survivors hold their members. With
        `lease_owner` (the fused engine), each record is written or deleted only
        while that owner holds its lease: LeaseLost, and the batch is retried."""
        fence = lease_owner or ""
        pipe = self.client.pipeline(transaction=False)
        for gid, (removed, added) in (lookup or {}).items():
            for key in removed:
                pipe.srem(lookup_key(key), gid)
            for key in added:
                pipe.sadd(lookup_key(key), gid)
        activity = {s.golden_id: s.golden["last_event_time"] for s in states if s.golden is not None}
        if activity:  # for the retention policy: when a source last confirmed each customer
            pipe.zadd(f"{P}activity", activity)
            pipe.srem(f"{P}retention:flagged", *activity)
        if deleted:
            pipe.zrem(f"{P}activity", *deleted)
            pipe.srem(f"{P}retention:flagged", *deleted)
        if len(pipe):
            await self._write(pipe, "golden_save")
        replacements = []
        for state in states:
            key = gold_key(state.golden_id)
            fields: list = []
            for m, c in state.contributions.items():
                fields += [f"c:{m}", self._reseal(c, key, f"c:{m}")]
            if state.golden is not None:
                fields += ["golden", self._seal(orjson.dumps(state.golden), key, "golden")]
            if state.last_audit is not None:
                fields += ["audit", self._seal(state.last_audit, key, "audit")]  # it holds before/after values
            replacements.append(((key, lease_key(state.golden_id)), [fence, *fields]))
        written = self._timed("golden_save", self._eval_each, self._replace, replacements) if replacements else []
        # syndication state stays: the syndicate stage tombstones from it
        gone = [((gold_key(gid), lease_key(gid)), [fence]) for gid in deleted]
        written += self._timed("golden_save", self._eval_each, self._replace, gone) if gone else []
        lost = sum(1 for ok in written if not ok)
        if lost:
            raise LeaseLost(f"{lost} golden records' leases lost before they were saved")

    async def golden(self, gid: str) -> dict | None:
        raw = self.client.hget(gold_key(gid), "golden")
        return orjson.loads(self._open(raw, gold_key(gid), "golden")) if raw else None

    async def goldens(self, golden_ids: list[str]) -> dict[str, dict | None]:
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.hget(gold_key(gid), "golden")
        return {gid: orjson.loads(self._open(raw, gold_key(gid), "golden")) if raw else None
                for gid, raw in zip(golden_ids, await self._run(pipe, "golden_current"))}

    def all_golden(self, batch: int = 1000):
        """Every golden record held, in batches (for `hub reindex-lookups`)."""
        keys = []
        for key in self.client.scan_iter(match=f"{P}gold:*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                yield from self._golden_of(keys)
                keys = []
        yield from self._golden_of(keys)

    def _golden_of(self, keys: list[bytes]):
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "golden")
        for key, sealed in zip(keys, pipe.execute()):
            if sealed:
                yield orjson.loads(self._open(sealed, key.decode(), "golden"))

    async def golden_count(self) -> int:
        # the activity index holds each live golden record once (ZADD/ZREM are
        # idempotent), so a batch retried after a Redis crash cannot count twice
        return int(self.client.zcard(f"{P}activity"))

    def golden_sizes(self, sample: int = 2000) -> list[int]:
        """Members per golden record, for a random sample of the live golden
        records (the activity index holds each once): the workbench's duplicate rate."""
        gids = self.client.zrandmember(f"{P}activity", sample) or []
        if not gids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for gid in gids:
            pipe.scard(gm_key(gid.decode()))
        return [int(n) for n in pipe.execute()]
