"""The identity index (hub.ports.IdentityIndex) in Redis: members, blocking
keys, golden record membership, forwarding and folds, tombstones, steward
constraints, term counts, stored match decisions and the estimated match
parameters, everything under the `{hub:}` hash tag (one slot). Links are one
Lua call per batch (hub.store.redis.scripts.LINK_MANY).
"""

from __future__ import annotations

import orjson
import redis
from redis.cluster import RedisCluster

from hub.crypto import Keyring
from hub.ports import BlockView, LinkRequest, MemberEntry
from hub.store.redis import scripts
from hub.store.redis.base import RedisBase
from hub.store.redis.keys import (CONSTRAINTS, DELETED, DELETED_FROM, IDX, PARAMS, PARAMS_VERSION, apart_key, fold_key,
                                  gm_key, mem_key, pin_key)


class RedisIdentityIndex(RedisBase):
    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        super().__init__(client, keyring)
        self._link_many = self._script(scripts.LINK_MANY)
        self._blocks = self._script(scripts.BLOCKS)
        self._members = self._script(scripts.MEMBERS)
        self._folds = self._script(scripts.FOLDS)
        self._constraints = self._script(scripts.CONSTRAINTS)
        self._tallies = self._script(scripts.TALLIES)
        self._move = self._script(scripts.MOVE)
        self._forward = self._script(scripts.FORWARD)
        self._forward_folds = self._script(scripts.FORWARD_FOLDS)

    async def members(self, members: list[str], with_blocks: bool = True,
                      with_sizes: bool = False) -> dict[str, MemberEntry]:
        if not members:
            return {}
        rows = await self._index(self._members, [*_flags(with_blocks, with_sizes), *members], "index_members")
        return self._entries(members, rows, with_blocks, with_sizes)

    async def members_soon(self, members: list[str], with_blocks: bool = True, with_sizes: bool = False):
        if not members:
            return dict
        rows = self._index_soon(self._members, [*_flags(with_blocks, with_sizes), *members], "index_members")
        return lambda: self._entries(members, rows(), with_blocks, with_sizes)

    def _entries(self, members: list[str], rows, with_blocks: bool, with_sizes: bool) -> dict[str, MemberEntry]:
        found = {}
        for member, row in zip(members, rows):
            gid = row[0]
            if gid is not None:
                blocks = row[2] if with_blocks else None
                found[member] = MemberEntry(member, gid.decode(), orjson.loads(self._open(row[1], mem_key(member), "f")),
                                            blocks.decode().split(",") if blocks else [],
                                            int(row[-1]) if with_sizes else None)
        return found

    async def blocks(self, block_keys: list[str], limit: int) -> dict[str, BlockView]:
        if not block_keys:
            return {}
        rows = await self._index(self._blocks, [limit, *block_keys], "index_blocks")
        views = {}
        for key, (version, *found) in zip(block_keys, rows):
            views[key] = BlockView(None if found == [b"*"] else [m.decode() for m in found], int(version))
        return views

    async def link(self, requests: list[LinkRequest | str]) -> list[str | None]:
        if not requests:
            return []
        sealed = []  # ARGV[2..]: features travel beside the JSON, as bytes
        rows = []
        for r in requests:
            if isinstance(r, str):
                rows.append([r])
            else:
                sealed.append(self._seal(orjson.dumps(r.features), mem_key(r.member), "f"))
                rows.append([r.member, r.golden_id, len(sealed) + 1, r.blocks, r.absorbed,
                             [[b, v] for b, v in r.seen_versions.items()], r.terms])
        gids = await self._index(self._link_many, [orjson.dumps(rows), *sealed], "index_link")
        return [gid.decode() or None for gid in gids]

    async def tallies(self, terms: list[str], golden_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        """How many records in the index hold each term key, and how many
        source records each golden record holds: one round trip."""
        return (await self.tallies_soon(terms, golden_ids))()

    async def tallies_soon(self, terms: list[str], golden_ids: list[str]):
        if not terms and not golden_ids:
            return lambda: ({}, {})
        reply = self._index_soon(self._tallies, [len(terms), len(golden_ids), *terms, *golden_ids], "index_tallies")

        def tallied():
            counts, sizes = reply()
            return {t: int(c) for t, c in zip(terms, counts) if int(c)}, {g: int(n) for g, n in zip(golden_ids, sizes)}
        return tallied

    async def constraints(self, members: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Steward constraints per member: (kept apart from, kept together with)."""
        return (await self.constraints_soon(members))()

    async def constraints_soon(self, members: list[str]):
        if not members:
            return dict
        reply = self._index_soon(self._constraints, members, "index_constraints")

        def found():
            result = {}
            for member, (apart, pinned) in zip(members, reply() or ()):
                if apart or pinned:
                    result[member] = ({m.decode() for m in apart}, {m.decode() for m in pinned})
            return result
        return found

    async def add_constraints(self, kind: str, member: str, others: list[str]) -> None:
        """Both directions: each record of the pair knows it. A steward's
        latest decision about a pair replaces the one before (a link lifts a
        keep-apart, a split lifts a link); `release` lifts both."""
        pipe = self.client.pipeline(transaction=False)
        kept = {"split": apart_key, "link": pin_key}.get(kind)
        if kept is not None:
            pipe.incr(CONSTRAINTS)  # while none exist, matching skips looking them up
        for other in others:
            for key in (apart_key, pin_key):
                if key is kept:
                    pipe.sadd(key(member), other)
                    pipe.sadd(key(other), member)
                else:
                    pipe.srem(key(member), other)
                    pipe.srem(key(other), member)
        await self._run(pipe, "index_constraints")

    async def move(self, member: str, golden_id: str) -> str | None:
        previous = await self._index(self._move, [member, golden_id], "index_move")
        return previous.decode() if previous else None

    async def golden_members(self, golden_id: str) -> list[str]:
        return sorted(m.decode() for m in self.client.smembers(gm_key(golden_id)))

    async def sample_features(self, limit: int) -> list[dict]:
        """Features of up to `limit` records in the index (for re-estimating m and u)."""
        keys = []
        for key in self.client.scan_iter(match=f"{IDX}mem:*", count=1000):
            keys.append(key)
            if len(keys) >= limit:
                break
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "f")
        return [orjson.loads(self._open(f, key.decode(), "f")) for key, f in zip(keys, await self._run(pipe, "index_sample"))
                if f]

    async def save_parameters(self, parameters: dict) -> int:
        """Store estimated match parameters; returns their version (workers reload on change)."""
        pipe = self.client.pipeline(transaction=True)  # both keys in the index slot: a cluster MULTI needs one
        pipe.set(PARAMS, orjson.dumps(parameters))
        pipe.incr(PARAMS_VERSION)
        _, version = await self._run(pipe, "params_save")
        return int(version)

    async def load_parameters(self, known_version: int) -> tuple[int, dict | None]:
        """(version, parameters), parameters None when unchanged since `known_version`."""
        version = int(self.client.get(PARAMS_VERSION) or 0)
        if version == known_version:
            return version, None
        raw = self.client.get(PARAMS)
        return version, (orjson.loads(raw) if raw else None)

    async def remember_decisions(self, decisions: dict[str, bytes]) -> None:
        """Keep each record's latest match decision (evidence, no personal values) for `hub explain`."""
        if decisions:
            pipe = self.client.pipeline(transaction=False)
            for member, decision in decisions.items():
                pipe.hset(mem_key(member), "d", self._seal(decision, mem_key(member), "d"))
            await self._write(pipe, "index_decisions")

    async def forget_references(self, members: list[str]) -> None:
        """Take erased records out of the evidence other records' stored
        decisions keep (a decision names its strongest candidates). Only
        records sharing a blocking key can have had them as candidates."""
        entries = await self.members(members)
        gone = set(members) | {entry.golden_id for entry in entries.values()}
        views = await self.blocks(sorted({b for entry in entries.values() for b in entry.blocks}), 1 << 30)
        others = sorted({m for view in views.values() for m in view.members or ()} - set(members))
        if not others:
            return
        pipe = self.client.pipeline(transaction=False)
        for member in others:
            pipe.hget(mem_key(member), "d")
        rewrite = self.client.pipeline(transaction=False)
        for member, sealed in zip(others, await self._run(pipe, "index_decisions")):
            if sealed is None:
                continue
            raw = self._open(sealed, mem_key(member), "d")
            if not any(g.encode() in raw for g in gone):
                continue
            decision = orjson.loads(raw)
            decision["candidates"] = [c for c in decision.get("candidates") or []
                                      if c.get("member") not in gone and c.get("golden_id") not in gone]
            decision["merged_golden_ids"] = [g for g in decision.get("merged_golden_ids") or [] if g not in gone]
            rewrite.hset(mem_key(member), "d", self._seal(orjson.dumps(decision), mem_key(member), "d"))
        if len(rewrite):
            await self._run(rewrite, "index_decisions")

    async def decision(self, member: str) -> tuple[str | None, dict | None]:
        """A record's current golden id and the decision that placed it."""
        gid, decision = self.client.hmget(mem_key(member), "gid", "d")
        return (gid.decode() if gid else None), (orjson.loads(self._open(decision, mem_key(member), "d"))
                                                 if decision else None)

    async def unlink(self, members: list[str]) -> list[str | None]:
        """Remove records from the index, and their deletion times; the golden id each belonged to (None if none)."""
        if members:
            self.client.zrem(DELETED, *members)
            self.client.hdel(DELETED_FROM, *members)
        return await self.link(list(members))

    async def tombstones(self, members: list[str]) -> dict[str, int]:
        return (await self.tombstones_soon(members))()

    async def tombstones_soon(self, members: list[str]):
        if not members:
            return dict
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(DELETED, members)
        replies = self._soon(pipe, "index_tombstones")
        return lambda: {m: int(s) for m, s in zip(members, replies()[0]) if s is not None}

    async def add_tombstones(self, deleted: dict[str, int]) -> None:
        if deleted:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(DELETED, deleted, gt=True)
            await self._write(pipe, "index_tombstones")

    async def remember_deleted_from(self, golden_ids: dict[str, str]) -> None:
        if golden_ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(DELETED_FROM, mapping=golden_ids)
            await self._write(pipe, "index_tombstones")

    async def deleted_from(self, members: list[str]) -> dict[str, str]:
        if not members:
            return {}
        found = self._timed("index_tombstones", self.client.hmget, DELETED_FROM, members)
        return {m: gid.decode() for m, gid in zip(members, found) if gid is not None}

    async def resolve_forward(self, golden_ids: list[str]) -> dict[str, str]:
        """Each golden id mapped to its survivor (itself unless it was merged away)."""
        if not golden_ids:
            return {}
        found = await self._index(self._forward, golden_ids, "index_forward")
        return {gid: survivor.decode() for gid, survivor in zip(golden_ids, found)}

    async def pending_folds(self, golden_ids: list[str]) -> dict[str, list[str]]:
        if not golden_ids:
            return {}
        rows = await self._index(self._folds, golden_ids, "index_folds")
        return {gid: sorted(m.decode() for m in found) for gid, found in zip(golden_ids, rows) if found}

    async def survivors_and_folds(self, golden_ids: list[str]
                                  ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
        if not golden_ids:
            return {}, {}, {}
        rows, deeper = await self._index(self._forward_folds, golden_ids, "index_forward")
        survivors = {gid: survivor.decode() for gid, (survivor, _) in zip(golden_ids, rows)}
        folds = {survivor.decode(): sorted(m.decode() for m in found) for survivor, found in rows if found}
        below = {gid.decode(): sorted(m.decode() for m in found) for gid, found in deeper}
        return survivors, dict(sorted(folds.items())), below  # folds in the order pending_folds gives them

    async def folded(self, folds: dict[str, list[str]]) -> None:
        if folds:
            pipe = self.client.pipeline(transaction=False)
            for gid, absorbed in folds.items():
                pipe.srem(fold_key(gid), *absorbed)
            await self._write(pipe, "index_folds")


def _flags(with_blocks: bool, with_sizes: bool) -> list[str]:
    return ["1" if with_blocks else "0", "1" if with_sizes else "0"]
