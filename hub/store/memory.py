"""The identity index (hub.ports.IdentityIndex) in this process's memory.

`MemoryIndex` owns what the Redis index keeps under `{hub:}` (see
hub/store/redis/keys.py for the layout), as plain Python containers:
members with their golden id, features, blocking keys, counted term keys and
last match decision; blocking-key member sets and their versions; golden
record member sets, forwarding of merged-away golden ids and pending folds;
tombstones and where deleted records were; steward constraints; term counts;
estimated match parameters. It behaves as the Redis index does for
everything the match stage uses, operation for operation: the same block
limit (a key more than `limit` records share is given as None), the same
link script semantics (a known record keeps its golden id, merged-away ids
are followed, a block whose version moved since the record was decided stops
the batch there, term counts follow the terms a record carries), the same
unlink, tallies, constraints and tombstones. Candidate selection (the
weighted vote over shared keys and its keyed-hash tie-break) is the match
stage's own (`hub.stages.match._most_shared`), the same whichever index is
behind it. tests/unit/test_memory_index.py runs both side by side.

Features are kept as the JSON the Redis index stores (unsealed: nothing here
outlives the process), so a record read back is a fresh copy, as from Redis.
One process only: every call runs to completion without awaiting, so a link
batch is atomic as the Lua call is. The index alone is what `hub resolve`
needs; the golden store, consent, surveys, syndication state and schedules
are in hub.store.memory_store, whose `MemoryStore` is this index with them.
"""

from __future__ import annotations

import orjson

from hub.ports import BlockView, LinkRequest, MemberEntry

FORWARD_HOPS = 64  # as the Redis index's forward script: guards a lookup against a cycle
MAX_FOLD_READS = 1000  # as the Redis index's FORWARD_FOLDS script: bounds the levels of folds read at once


def discard(sets: dict[str, set[str]], key: str, value: str) -> None:
    """SREM: take `value` out of the set under `key`; a set left empty is gone, as a Redis key is."""
    found = sets.get(key)
    if found is not None:
        found.discard(value)
        if not found:
            del sets[key]


class _Member:
    __slots__ = ("gid", "f", "b", "t")

    def __init__(self, gid: str, f: bytes, b: list[str], t: list[str]):
        self.gid, self.f, self.b, self.t = gid, f, b, t


class MemoryIndex:
    """The identity index as dictionaries and sets (one process, no server)."""

    def __init__(self):
        self._mem: dict[str, _Member] = {}
        self._decisions: dict[str, bytes] = {}   # a record's last match decision (mem field d)
        self._blk: dict[str, set[str]] = {}
        self._bv: dict[str, int] = {}
        self._gm: dict[str, set[str]] = {}
        self._fwd: dict[str, str] = {}
        self._fold: dict[str, set[str]] = {}
        self._deleted: dict[str, int] = {}
        self._deleted_from: dict[str, str] = {}
        self._apart: dict[str, set[str]] = {}
        self._pin: dict[str, set[str]] = {}
        self._constraints_made = 0
        self._tf: dict[str, int] = {}
        self._params: tuple[int, dict | None] = (0, None)

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    # reads
    async def members(self, members: list[str], with_blocks: bool = True,
                      with_sizes: bool = False) -> dict[str, MemberEntry]:
        found = {}
        for member in members:
            held = self._mem.get(member)
            if held is not None:
                found[member] = MemberEntry(member, held.gid, orjson.loads(held.f),
                                            list(held.b) if with_blocks else [],
                                            len(self._gm.get(held.gid, ())) if with_sizes else None)
        return found

    async def members_soon(self, members: list[str], with_blocks: bool = True, with_sizes: bool = False):
        found = await self.members(members, with_blocks, with_sizes)
        return lambda: found

    async def blocks(self, block_keys: list[str], limit: int) -> dict[str, BlockView]:
        views = {}
        for key in block_keys:
            found = self._blk.get(key, ())
            views[key] = BlockView(None if len(found) > limit else list(found), self._bv.get(key, 0))
        return views

    async def tallies(self, terms: list[str], golden_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        return (await self.tallies_soon(terms, golden_ids))()

    async def tallies_soon(self, terms: list[str], golden_ids: list[str]):
        counts = {t: self._tf[t] for t in terms if self._tf.get(t)}
        sizes = {g: len(self._gm.get(g, ())) for g in golden_ids}
        return lambda: (counts, sizes)

    async def constraints(self, members: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        if not self._constraints_made:  # as Redis: while none were ever made, none are looked up
            return {}
        result = {}
        for member in members:
            apart, pinned = self._apart.get(member, set()), self._pin.get(member, set())
            if apart or pinned:
                result[member] = (set(apart), set(pinned))
        return result

    async def constraints_soon(self, members: list[str]):
        found = await self.constraints(members)
        return lambda: found

    async def golden_members(self, golden_id: str) -> list[str]:
        return sorted(self._gm.get(golden_id, ()))

    async def resolve_forward(self, golden_ids: list[str]) -> dict[str, str]:
        result = {}
        for gid in golden_ids:
            survivor, hops = gid, 0
            while survivor in self._fwd and hops < FORWARD_HOPS:
                survivor, hops = self._fwd[survivor], hops + 1
            result[gid] = survivor
        return result

    async def pending_folds(self, golden_ids: list[str]) -> dict[str, list[str]]:
        return {gid: sorted(self._fold[gid]) for gid in golden_ids if self._fold.get(gid)}

    async def survivors_and_folds(self, golden_ids: list[str]
                                  ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
        survivors = await self.resolve_forward(golden_ids)
        seen = set(survivors.values())
        folds = await self.pending_folds(sorted(seen))
        frontier = []
        for absorbed in (a for held in folds.values() for a in held):
            if absorbed not in seen:
                seen.add(absorbed)
                frontier.append(absorbed)
        below: dict[str, list[str]] = {}
        while frontier and len(below) < MAX_FOLD_READS:  # level by level, as the Redis script reads them
            deeper = []
            for gid in frontier:
                below[gid] = sorted(self._fold.get(gid, ()))
                for absorbed in below[gid]:
                    if absorbed not in seen:
                        seen.add(absorbed)
                        deeper.append(absorbed)
            frontier = deeper
        return survivors, folds, below

    async def folded(self, folds: dict[str, list[str]]) -> None:
        for gid, absorbed in folds.items():
            held = self._fold.get(gid)
            if held is not None:
                held.difference_update(absorbed)
                if not held:
                    del self._fold[gid]

    async def decision(self, member: str) -> tuple[str | None, dict | None]:
        held, decision = self._mem.get(member), self._decisions.get(member)
        return (held.gid if held else None), (orjson.loads(decision) if decision else None)

    async def sample_features(self, limit: int) -> list[dict]:
        return [orjson.loads(held.f) for _, held in zip(range(limit), self._mem.values())]

    # links: the Redis index's link script, step for step
    async def link(self, requests: list[LinkRequest | str]) -> list[str | None]:
        bumped: dict[str, int] = {}
        out: list[str | None] = []
        for request in requests:
            if isinstance(request, str):
                out.append(self._unlink(request))
                continue
            # the record was decided on blocks as they were when read; if one moved since, stop here
            for block, seen in request.seen_versions.items():
                if self._bv.get(block, 0) != seen + bumped.get(block, 0):
                    return out
            out.append(self._link(request, bumped))
        return out

    def _recount(self, held: _Member | None, terms: list[str]) -> None:
        """The term counts while a record is in the index (the Lua `recount`,
        duplicates included: a term held twice and kept is counted down once)."""
        kept = dict.fromkeys(terms, True)
        tf = self._tf
        for t in held.t if held is not None else ():
            if kept.get(t):
                kept[t] = False
            else:
                left = tf.get(t, 0) - 1
                if left <= 0:
                    tf.pop(t, None)
                else:
                    tf[t] = left
        for t in terms:
            if kept[t]:
                kept[t] = False
                tf[t] = tf.get(t, 0) + 1

    def _survivor(self, gid: str) -> str:
        while gid in self._fwd:
            gid = self._fwd[gid]
        return gid

    def _link(self, r: LinkRequest, bumped: dict[str, int]) -> str:
        member = r.member
        held = self._mem.get(member)
        current = held.gid if held is not None else None
        gid = self._survivor(current if current is not None else r.golden_id)
        if held is not None:
            wanted = set(r.blocks)
            for h in held.b:
                if h not in wanted:
                    discard(self._blk, h, member)
        for h in r.blocks:
            found = self._blk.setdefault(h, set())
            if member not in found:
                found.add(member)
                self._bv[h] = self._bv.get(h, 0) + 1
                bumped[h] = bumped.get(h, 0) + 1
        if current is not None and current != gid:
            discard(self._gm, current, member)
        terms = list(r.terms or ())
        self._recount(held, terms)
        self._mem[member] = _Member(gid, orjson.dumps(r.features), list(r.blocks), terms)
        self._gm.setdefault(gid, set()).add(member)
        for absorbed in r.absorbed:
            absorbed = self._survivor(absorbed)
            if absorbed == gid:
                continue
            moved = self._gm.pop(absorbed, set())
            for m in moved:
                if m in self._mem:
                    self._mem[m].gid = gid
            self._gm[gid].update(moved)
            self._fwd[absorbed] = gid
            # the merge must reach the golden store even if the linked record saying so is lost
            self._fold.setdefault(gid, set()).add(absorbed)
        return gid

    def _unlink(self, member: str) -> str | None:
        held = self._mem.get(member)
        if held is None:
            return None
        for h in held.b:
            discard(self._blk, h, member)
        discard(self._gm, held.gid, member)
        self._recount(held, [])
        del self._mem[member]
        self._decisions.pop(member, None)
        return held.gid

    async def unlink(self, members: list[str]) -> list[str | None]:
        for member in members:
            self._deleted.pop(member, None)
            self._deleted_from.pop(member, None)
        return await self.link(list(members))

    async def move(self, member: str, golden_id: str) -> str | None:
        held = self._mem.get(member)
        if held is None:
            return None
        previous, held.gid = held.gid, golden_id
        discard(self._gm, previous, member)
        self._gm.setdefault(golden_id, set()).add(member)
        return previous

    # deletions
    async def tombstones(self, members: list[str]) -> dict[str, int]:
        return {m: self._deleted[m] for m in members if m in self._deleted}

    async def tombstones_soon(self, members: list[str]):
        found = await self.tombstones(members)
        return lambda: found

    async def add_tombstones(self, deleted: dict[str, int]) -> None:
        for member, at in deleted.items():  # ZADD GT: the latest time per record is kept
            if at > self._deleted.get(member, at - 1):
                self._deleted[member] = at

    async def remember_deleted_from(self, golden_ids: dict[str, str]) -> None:
        self._deleted_from.update(golden_ids)

    async def deleted_from(self, members: list[str]) -> dict[str, str]:
        return {m: self._deleted_from[m] for m in members if m in self._deleted_from}

    # stewards
    async def add_constraints(self, kind: str, member: str, others: list[str]) -> None:
        kept = {"split": self._apart, "link": self._pin}.get(kind)
        if kept is not None:
            self._constraints_made += 1
        for other in others:
            for held in (self._apart, self._pin):
                for a, b in ((member, other), (other, member)):
                    if held is kept:
                        held.setdefault(a, set()).add(b)
                    elif a in held:
                        held[a].discard(b)
                        if not held[a]:
                            del held[a]

    # decisions (`hub explain`'s evidence)
    async def remember_decisions(self, decisions: dict[str, bytes]) -> None:
        self._decisions.update(decisions)

    async def forget_references(self, members: list[str]) -> None:
        entries = await self.members(members)
        gone = set(members) | {entry.golden_id for entry in entries.values()}
        others = {m for entry in entries.values() for b in entry.blocks for m in self._blk.get(b, ())}
        for member in sorted(others - set(members)):
            raw = self._decisions.get(member)
            if raw is None or not any(g.encode() in raw for g in gone):
                continue
            decision = orjson.loads(raw)
            decision["candidates"] = [c for c in decision.get("candidates") or []
                                      if c.get("member") not in gone and c.get("golden_id") not in gone]
            decision["merged_golden_ids"] = [g for g in decision.get("merged_golden_ids") or [] if g not in gone]
            self._decisions[member] = orjson.dumps(decision)

    # estimated match parameters
    async def save_parameters(self, parameters: dict) -> int:
        self._params = (self._params[0] + 1, orjson.loads(orjson.dumps(parameters)))
        return self._params[0]

    async def load_parameters(self, known_version: int) -> tuple[int, dict | None]:
        version, parameters = self._params
        return version, (None if version == known_version else parameters)
