"""Redis implementation of the identity index, golden store, consent store and
syndication state: the key layout and the Lua that makes each link atomic.

Key layout (every key carries a hash tag, so Redis Cluster places a golden
record's keys in one slot):
  hub:mem:{<member>}   hash  gid, f (features, sealed), b (blocking key hashes), d (last match decision, sealed)
  hub:blk:{<hash>}     set   members found under one blocking key
  hub:bv:{<hash>}      str   version of that set: +1 whenever a member joins it
  hub:gm:{<gid>}       set   members of a golden record
  hub:fwd:{<gid>}      str   survivor of a golden record merged away
  hub:fold:{<gid>}     set   golden ids merged into this one, contributions not yet folded in by the master
  hub:deleted          zset  member -> time its source deleted it (older events for it are superseded)
  hub:apart:{<member>} set   members a steward keeps apart from this one
  hub:pin:{<member>}   set   members a steward keeps together with this one
  hub:gold:{<gid>}     hash  c:<member> (contribution, sealed), golden (sealed), audit (last audit event, sealed)
  hub:cons:{<member>}  hash  <purpose>|<channel> -> "<event_time>|<tie-break>|<statement, sealed>"
  hub:srv:{<member>}   hash  <survey id> -> "<responded_at>|<tie-break>|<answer, sealed>" (the latest per survey)
  hub:synd:{<gid>}     hash  <target> -> sealed "<key>\\x1f<projection hash>"
  hub:lk:{<hash>}      set   golden ids found by one identifier (keyed hash of loyalty id, e-mail, phone
                             or source record: hub/lookup.py), kept by the master with the golden records

Sealed = AES-GCM with the keyring of hub.crypto, associated data "<key>|<field>":
no name, e-mail, phone or address is held in clear, and a value copied to
another key does not open. Key names hold source record keys
(<source>:<source_id>), golden ids and keyed hashes only. What the Lua
scripts must read (golden id, blocking hashes, a consent statement's time)
stays outside the sealed part.

The matcher's reads and links run as one Lua call per batch: redis-py spends
~10 µs of worker CPU per command, and a batch needs thousands of lookups.
Those scripts compute key names inside Lua, which a single Redis server
allows and Redis Cluster does not; on Cluster they must be grouped by slot.
"""

from __future__ import annotations

import hashlib
import time

import orjson
import redis

from hub import metrics
from hub.crypto import Keyring, default_keyring
from hub.ports import BlockView, GoldenState, LinkRequest, MemberEntry

P = "hub:"

# Links records in order, each as if alone: a record already in the index
# keeps its golden id (re-matching is an explicit act), and a golden id merged
# away is followed to its survivor. Each record carries the versions of its
# blocking keys as read when it was decided; if another worker has added a
# member under one of them since, the script stops before that record and the
# caller decides it again, so two workers matching the same person at the
# same moment cannot found two golden records. One atomic call per batch.
_BLOCKS = """
local limit = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local found = redis.call('SRANDMEMBER', 'hub:blk:{' .. ARGV[i] .. '}', limit + 1)
  if #found > limit then found = {'*'} end
  table.insert(found, 1, redis.call('GET', 'hub:bv:{' .. ARGV[i] .. '}') or '0')
  out[#out + 1] = found
end
return out
"""

_MEMBERS = """
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = redis.call('HMGET', 'hub:mem:{' .. ARGV[i] .. '}', 'gid', 'f', 'b')
end
return out
"""

_LINK_MANY = """
local bumped = {}
local link = function(member, gid, feats, blocks, absorbed_ids)
  local memkey = 'hub:mem:{' .. member .. '}'
  local current = redis.call('HGET', memkey, 'gid')
  if current then gid = current end
  local fwd = redis.call('GET', 'hub:fwd:{' .. gid .. '}')
  while fwd do gid = fwd; fwd = redis.call('GET', 'hub:fwd:{' .. gid .. '}') end
  local wanted = {}
  for _, h in ipairs(blocks) do wanted[h] = true end
  local old = redis.call('HGET', memkey, 'b')
  if old then
    for h in string.gmatch(old, '[^,]+') do
      if not wanted[h] then redis.call('SREM', 'hub:blk:{' .. h .. '}', member) end
    end
  end
  for _, h in ipairs(blocks) do
    if redis.call('SADD', 'hub:blk:{' .. h .. '}', member) == 1 then
      redis.call('INCR', 'hub:bv:{' .. h .. '}')
      bumped[h] = (bumped[h] or 0) + 1
    end
  end
  if current and current ~= gid then redis.call('SREM', 'hub:gm:{' .. current .. '}', member) end
  redis.call('HSET', memkey, 'gid', gid, 'f', feats, 'b', table.concat(blocks, ','))
  redis.call('SADD', 'hub:gm:{' .. gid .. '}', member)
  for _, absorbed in ipairs(absorbed_ids) do
    while true do
      local nxt = redis.call('GET', 'hub:fwd:{' .. absorbed .. '}')
      if not nxt then break end
      absorbed = nxt
    end
    if absorbed ~= gid then
      for _, m in ipairs(redis.call('SMEMBERS', 'hub:gm:{' .. absorbed .. '}')) do
        redis.call('HSET', 'hub:mem:{' .. m .. '}', 'gid', gid)
        redis.call('SADD', 'hub:gm:{' .. gid .. '}', m)
      end
      redis.call('DEL', 'hub:gm:{' .. absorbed .. '}')
      redis.call('SET', 'hub:fwd:{' .. absorbed .. '}', gid)
      -- the merge must reach the golden store even if the linked record saying so is lost
      redis.call('SADD', 'hub:fold:{' .. gid .. '}', absorbed)
    end
  end
  return gid
end
local unlink = function(member)
  local memkey = 'hub:mem:{' .. member .. '}'
  local gid = redis.call('HGET', memkey, 'gid')
  if not gid then return '' end
  local old = redis.call('HGET', memkey, 'b')
  if old then
    for h in string.gmatch(old, '[^,]+') do redis.call('SREM', 'hub:blk:{' .. h .. '}', member) end
  end
  redis.call('SREM', 'hub:gm:{' .. gid .. '}', member)
  redis.call('DEL', memkey)
  return gid
end
local out = {}
for _, req in ipairs(cjson.decode(ARGV[1])) do
  if #req == 1 then
    out[#out + 1] = unlink(req[1])
  else
    -- the record was decided on blocks as they were when read; if another
    -- worker added to one since, stop here: the caller re-reads and re-decides
    for _, seen in ipairs(req[6]) do
      local now = tonumber(redis.call('GET', 'hub:bv:{' .. seen[1] .. '}') or '0')
      if now ~= seen[2] + (bumped[seen[1]] or 0) then return out end
    end
    out[#out + 1] = link(req[1], req[2], ARGV[req[3]], req[4], req[5])
  end
end
return out
"""

_CONSTRAINTS = """
if tonumber(redis.call('GET', 'hub:stats:constraints') or '0') == 0 then return {} end
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = {redis.call('SMEMBERS', 'hub:apart:{' .. ARGV[i] .. '}'),
                   redis.call('SMEMBERS', 'hub:pin:{' .. ARGV[i] .. '}')}
end
return out
"""

# Moves one record to another golden record (a steward's split).
_MOVE = """
local member, to = ARGV[1], ARGV[2]
local memkey = 'hub:mem:{' .. member .. '}'
local from = redis.call('HGET', memkey, 'gid')
if not from then return false end
redis.call('HSET', memkey, 'gid', to)
redis.call('SREM', 'hub:gm:{' .. from .. '}', member)
redis.call('SADD', 'hub:gm:{' .. to .. '}', member)
return from
"""

# Latest statement per (purpose, channel), or answer per survey, wins by its
# own time; equal times are settled by a keyed digest of the item (the sealed
# body is random-looking and differs on every write), so every worker agrees.
_PUT_LATEST = """
local changed = 0
for i = 1, #ARGV, 4 do
  local field, at, tie, body = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local held = redis.call('HGET', KEYS[1], field)
  local held_at, held_tie = -1, ''
  if held then
    local a, t = string.match(held, '^(%d+)|(%x*)|')
    held_at, held_tie = tonumber(a), t
  end
  if at > held_at or (at == held_at and tie > held_tie) then
    redis.call('HSET', KEYS[1], field, at .. '|' .. tie .. '|' .. body)
    changed = 1
  end
end
return changed
"""


# One lookup, one round trip: a golden id (followed to its survivor when merged
# away, so a caller holding an old id still finds the customer) or an index
# key, and the golden records it names (golden id, sealed record, ...).
_LOOKUP = """
local gids
if ARGV[1] == 'g' then
  local gid = ARGV[2]
  local hops = 0
  local fwd = redis.call('GET', 'hub:fwd:{' .. gid .. '}')
  while fwd and hops < 64 do
    gid = fwd; hops = hops + 1
    fwd = redis.call('GET', 'hub:fwd:{' .. gid .. '}')
  end
  gids = {gid}
else
  gids = redis.call('SRANDMEMBER', 'hub:lk:{' .. ARGV[2] .. '}', tonumber(ARGV[3]))
end
local out = {}
for _, gid in ipairs(gids) do
  local golden = redis.call('HGET', 'hub:gold:{' .. gid .. '}', 'golden')
  if golden then out[#out + 1] = gid; out[#out + 1] = golden end
end
return out
"""

# Re-sealing one value only if nobody changed it since it was read, so
# `hub rekey` can run beside working workers.
_SWAP = """
local n = 0
for i = 1, #ARGV, 4 do
  if redis.call('HGET', ARGV[i], ARGV[i + 1]) == ARGV[i + 2] then
    redis.call('HSET', ARGV[i], ARGV[i + 1], ARGV[i + 3])
    n = n + 1
  end
end
return n
"""


def mem_key(member: str) -> str:
    return f"{P}mem:{{{member}}}"


def gold_key(gid: str) -> str:
    return f"{P}gold:{{{gid}}}"


def cons_key(member: str) -> str:
    return f"{P}cons:{{{member}}}"


def lookup_key(index_key: str) -> str:
    return f"{P}lk:{{{index_key}}}"


def survey_key(member: str) -> str:
    return f"{P}srv:{{{member}}}"


def synd_key(gid: str) -> str:
    return f"{P}synd:{{{gid}}}"


class RedisStore:
    """All of the hub's Redis state behind the ports in hub.ports.

    The ports are async, but this uses redis-py's synchronous client: each
    stage makes a few pipelined round trips per batch (well under a
    millisecond on a local network), and the asyncio client spends ~45 µs of
    CPU per command on timeouts and futures, against ~10 µs here."""

    def __init__(self, client: redis.Redis, keyring: Keyring | None = None):
        self.client = client
        self.keyring = keyring or default_keyring()
        # id(contribution) -> (contribution, where, ciphertext) as loaded; holding the object keeps its id unique
        self._sealed: dict[int, tuple[dict, str, bytes]] = {}
        self._link_many = client.register_script(_LINK_MANY)
        self._blocks = client.register_script(_BLOCKS)
        self._members = client.register_script(_MEMBERS)
        self._constraints = client.register_script(_CONSTRAINTS)
        self._move = client.register_script(_MOVE)
        self._put_latest_script = client.register_script(_PUT_LATEST)
        self._lookup = client.register_script(_LOOKUP)
        self._swap = client.register_script(_SWAP)

    @classmethod
    def from_url(cls, url: str, keyring: Keyring | None = None) -> "RedisStore":
        return cls(redis.Redis.from_url(url, decode_responses=False, socket_timeout=30,
                                        health_check_interval=30), keyring)

    def _seal(self, value: bytes, key: str, field: str) -> bytes:
        return self.keyring.seal(value, f"{key}|{field}".encode())

    def _open(self, sealed: bytes, key: str, field: str) -> bytes:
        return self.keyring.open(sealed, f"{key}|{field}".encode())

    def _reseal(self, contribution: dict, key: str, field: str) -> bytes:
        """Contributions are replaced, never mutated: one saved where it was
        loaded keeps its ciphertext (no encryption for unchanged members)."""
        held = self._sealed.pop(id(contribution), None)
        if held is not None and held[0] is contribution and held[1] == f"{key}|{field}" \
                and self.keyring.is_current(held[2]):
            return held[2]
        return self._seal(orjson.dumps(contribution), key, field)

    async def close(self) -> None:
        self.client.close()

    async def ping(self) -> bool:
        return bool(self.client.ping())

    async def _run(self, pipe, operation: str):
        started = time.perf_counter()
        try:
            return pipe.execute()
        except Exception:
            metrics.REDIS_ERRORS.labels(operation).inc()
            raise
        finally:
            metrics.REDIS_SECONDS.labels(operation).observe(time.perf_counter() - started)

    def rekey(self, batch: int = 500) -> dict[str, int]:
        """Re-seal every sealed value not sealed with the keyring's current key
        (after a new key was put first). Safe beside running workers: a value
        changed meanwhile is left alone (a worker wrote it with the current key)."""
        counts = {"scanned": 0, "resealed": 0}
        for pattern in (f"{P}mem:*", f"{P}gold:*", f"{P}cons:*", f"{P}synd:*"):
            keys = []
            for key in self.client.scan_iter(match=pattern, count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    self._rekey_keys(keys, counts)
                    keys = []
            self._rekey_keys(keys, counts)
        return counts

    def _rekey_keys(self, keys: list[bytes], counts: dict[str, int]) -> None:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        args = []
        for key, fields in zip(keys, pipe.execute()):
            name = key.decode()
            for field, value in fields.items():
                field_name = field.decode()
                if name.startswith((f"{P}cons:", f"{P}srv:")):
                    at, tie, sealed = value.split(b"|", 2)
                    prefix = at + b"|" + tie + b"|"
                elif name.startswith(f"{P}mem:") and field_name not in ("f", "d"):
                    continue
                else:
                    sealed, prefix = value, b""
                counts["scanned"] += 1
                if self.keyring.is_current(sealed):
                    continue
                fresh = self._seal(self._open(sealed, name, field_name), name, field_name)
                args += [key, field, value, prefix + fresh]
        if args:
            counts["resealed"] += int(self._swap(args=args))

    # identity index
    async def members(self, members: list[str]) -> dict[str, MemberEntry]:
        if not members:
            return {}
        pipe = self.client.pipeline(transaction=False)
        self._members(args=members, client=pipe)
        (rows,) = await self._run(pipe, "index_members")
        found = {}
        for member, (gid, feats, blocks) in zip(members, rows):
            if gid is not None:
                found[member] = MemberEntry(member, gid.decode(), orjson.loads(self._open(feats, mem_key(member), "f")),
                                            blocks.decode().split(",") if blocks else [])
        return found

    async def blocks(self, block_keys: list[str], limit: int) -> dict[str, BlockView]:
        if not block_keys:
            return {}
        pipe = self.client.pipeline(transaction=False)
        self._blocks(args=[limit, *block_keys], client=pipe)
        (rows,) = await self._run(pipe, "index_blocks")
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
                             [[b, v] for b, v in r.seen_versions.items()]])
        pipe = self.client.pipeline(transaction=False)
        self._link_many(args=[orjson.dumps(rows), *sealed], client=pipe)
        (gids,) = await self._run(pipe, "index_link")
        return [gid.decode() or None for gid in gids]

    async def constraints(self, members: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Steward constraints per member: (kept apart from, kept together with)."""
        if not members:
            return {}
        pipe = self.client.pipeline(transaction=False)
        self._constraints(args=members, client=pipe)
        (rows,) = await self._run(pipe, "index_constraints")
        result = {}
        for member, (apart, pinned) in zip(members, rows or ()):
            if apart or pinned:
                result[member] = ({m.decode() for m in apart}, {m.decode() for m in pinned})
        return result

    async def add_constraints(self, kind: str, member: str, others: list[str]) -> None:
        """Both directions: each record of the pair knows it."""
        prefix = "apart" if kind == "split" else "pin"
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(f"{P}stats:constraints")  # while none exist, matching skips looking them up
        for other in others:
            pipe.sadd(f"{P}{prefix}:{{{member}}}", other)
            pipe.sadd(f"{P}{prefix}:{{{other}}}", member)
        await self._run(pipe, "index_constraints")

    async def move(self, member: str, golden_id: str) -> str | None:
        pipe = self.client.pipeline(transaction=False)
        self._move(args=[member, golden_id], client=pipe)
        (previous,) = await self._run(pipe, "index_move")
        return previous.decode() if previous else None

    async def golden_members(self, golden_id: str) -> list[str]:
        return sorted(m.decode() for m in self.client.smembers(f"{P}gm:{{{golden_id}}}"))

    async def sample_features(self, limit: int) -> list[dict]:
        """Features of up to `limit` records in the index (for re-estimating m and u)."""
        keys = []
        for key in self.client.scan_iter(match=f"{P}mem:*", count=1000):
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
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{P}params", orjson.dumps(parameters))
        pipe.incr(f"{P}params:version")
        _, version = await self._run(pipe, "params_save")
        return int(version)

    async def load_parameters(self, known_version: int) -> tuple[int, dict | None]:
        """(version, parameters), parameters None when unchanged since `known_version`."""
        version = int(self.client.get(f"{P}params:version") or 0)
        if version == known_version:
            return version, None
        raw = self.client.get(f"{P}params")
        return version, (orjson.loads(raw) if raw else None)

    async def remember_decisions(self, decisions: dict[str, bytes]) -> None:
        """Keep each record's latest match decision (evidence, no personal values) for `hub explain`."""
        if decisions:
            pipe = self.client.pipeline(transaction=False)
            for member, decision in decisions.items():
                pipe.hset(mem_key(member), "d", self._seal(decision, mem_key(member), "d"))
            await self._run(pipe, "index_decisions")

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
            self.client.zrem(f"{P}deleted", *members)
        return await self.link(list(members))

    async def tombstones(self, members: list[str]) -> dict[str, int]:
        if not members:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(f"{P}deleted", members)
        (scores,) = await self._run(pipe, "index_tombstones")
        return {m: int(s) for m, s in zip(members, scores) if s is not None}

    async def add_tombstones(self, deleted: dict[str, int]) -> None:
        if deleted:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(f"{P}deleted", deleted, gt=True)
            await self._run(pipe, "index_tombstones")

    async def resolve_forward(self, golden_ids: list[str]) -> dict[str, str]:
        """Each golden id mapped to its survivor (itself unless it was merged away)."""
        resolved = {gid: gid for gid in golden_ids}
        pending = list(golden_ids)
        while pending:
            pipe = self.client.pipeline(transaction=False)
            for gid in pending:
                pipe.get(f"{P}fwd:{{{resolved[gid]}}}")
            nxt = []
            for gid, target in zip(pending, await self._run(pipe, "index_forward")):
                if target is not None:
                    resolved[gid] = target.decode()
                    nxt.append(gid)
            pending = nxt
        return resolved

    async def pending_folds(self, golden_ids: list[str]) -> dict[str, list[str]]:
        if not golden_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.smembers(f"{P}fold:{{{gid}}}")
        rows = await self._run(pipe, "index_folds")
        return {gid: sorted(m.decode() for m in found) for gid, found in zip(golden_ids, rows) if found}

    async def folded(self, folds: dict[str, list[str]]) -> None:
        if folds:
            pipe = self.client.pipeline(transaction=False)
            for gid, absorbed in folds.items():
                pipe.srem(f"{P}fold:{{{gid}}}", *absorbed)
            await self._run(pipe, "index_folds")

    # golden store
    async def load(self, golden_ids: list[str]) -> dict[str, GoldenState]:
        self._sealed.clear()  # one batch's worth at most; another stage loading in between only costs a re-seal
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.hgetall(gold_key(gid))
        states = {}
        for gid, fields in zip(golden_ids, await self._run(pipe, "golden_load")):
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
                   lookup: dict[str, tuple[set[str], set[str]]] | None = None) -> None:
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
        for state in states:
            key = gold_key(state.golden_id)
            pipe.delete(key)
            mapping = {f"c:{m}": self._reseal(c, key, f"c:{m}") for m, c in state.contributions.items()}
            if state.golden is not None:
                mapping["golden"] = self._seal(orjson.dumps(state.golden), key, "golden")
            if state.last_audit is not None:
                mapping["audit"] = self._seal(state.last_audit, key, "audit")  # it holds before/after values
            if mapping:
                pipe.hset(key, mapping=mapping)
        for gid in deleted:
            pipe.delete(gold_key(gid))  # syndication state stays: the syndicate stage tombstones from it
        await self._run(pipe, "golden_save")

    async def inactive(self, before_ms: int, limit: int = 1000) -> list[str]:
        """Golden ids with no source event since `before_ms`, not flagged yet."""
        found = self.client.zrangebyscore(f"{P}activity", "-inf", before_ms, start=0, num=limit * 4)
        if not found:
            return []
        flagged = self.client.smismember(f"{P}retention:flagged", found)
        return [gid.decode() for gid, done in zip(found, flagged) if not done][:limit]

    async def mark_flagged(self, golden_ids: list[str]) -> None:
        if golden_ids:
            self.client.sadd(f"{P}retention:flagged", *golden_ids)

    async def golden(self, gid: str) -> dict | None:
        raw = self.client.hget(gold_key(gid), "golden")
        return orjson.loads(self._open(raw, gold_key(gid), "golden")) if raw else None

    def lookup(self, golden_id: str | None = None, index_key: str | None = None, limit: int = 10) -> list[dict]:
        """Golden records by golden id (its survivor if merged away) or by a
        lookup index key; one round trip. Synchronous: called from web views,
        where it costs less than the asyncio client's machinery."""
        started = time.perf_counter()
        try:
            found = self._lookup(args=["g", golden_id] if golden_id is not None else ["i", index_key, limit])
        except Exception:
            metrics.REDIS_ERRORS.labels("lookup").inc()
            raise
        finally:
            metrics.REDIS_SECONDS.labels("lookup").observe(time.perf_counter() - started)
        pairs = zip(found[::2], found[1::2])  # golden id, sealed record
        return sorted((orjson.loads(self._open(sealed, gold_key(gid.decode()), "golden")) for gid, sealed in pairs),
                      key=lambda g: g["golden_id"])

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

    def add_lookup_keys(self, keys: dict[str, set[str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for gid, found in keys.items():
            for key in found:
                pipe.sadd(lookup_key(key), gid)
        pipe.execute()

    async def golden_count(self) -> int:
        # the activity index holds each live golden record once (ZADD/ZREM are
        # idempotent), so a batch retried after a Redis crash cannot count twice
        return int(self.client.zcard(f"{P}activity"))

    # consent store
    async def _put_latest(self, key, items: dict[str, list[dict]], slot, at: str, operation: str) -> dict[str, bool]:
        """Per member hash `key(member)`: each item in its `slot(item)`, kept
        only if newer (by `item[at]`) than what the slot holds. True for each
        member whose hash changed."""
        members = [m for m, found in items.items() if found]
        if not members:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            args = []
            hash_key_ = key(member)
            for item in items[member]:
                field = slot(item)
                body = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
                tie = hashlib.blake2s(body, digest_size=8).hexdigest()
                args += [field, item[at], tie, self._seal(body, hash_key_, field)]
            self._put_latest_script(keys=[hash_key_], args=args, client=pipe)
        return {m: bool(c) for m, c in zip(members, await self._run(pipe, operation))}

    async def _latest(self, key, members: list[str], operation: str) -> dict[str, list[dict]]:
        if not members:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(key(member))
        result = {}
        for member, values in zip(members, await self._run(pipe, operation)):
            hash_key_ = key(member)
            result[member] = [orjson.loads(self._open(v.split(b"|", 2)[2], hash_key_, f.decode()))
                              for f, v in sorted(values.items())]
        return result

    async def put(self, statements: dict[str, list[dict]]) -> dict[str, bool]:
        """Store statements per member; True for each member whose consent changed."""
        return await self._put_latest(cons_key, statements, lambda st: f"{st['purpose']}|{st['channel']}",
                                      "event_time", "consent_put")

    async def get(self, members: list[str]) -> dict[str, list[dict]]:
        return await self._latest(cons_key, members, "consent_get")

    async def forget(self, members: list[str]) -> None:
        if members:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(*(cons_key(m) for m in members))
            await self._run(pipe, "consent_forget")

    # survey store
    async def put_surveys(self, answers: dict[str, list[dict]]) -> dict[str, bool]:
        """Store answers per member, the latest per survey; True for each member whose answers changed."""
        return await self._put_latest(survey_key, answers, lambda a: a["survey_id"], "responded_at", "survey_put")

    async def get_surveys(self, members: list[str]) -> dict[str, list[dict]]:
        found = await self._latest(survey_key, members, "survey_get")
        return {m: answers for m, answers in found.items() if answers}

    async def forget_surveys(self, members: list[str]) -> None:
        if members:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(*(survey_key(m) for m in members))
            await self._run(pipe, "survey_forget")

    # syndication state
    async def load_syndication(self, golden_ids: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.hgetall(synd_key(gid))
        result = {}
        for gid, fields in zip(golden_ids, await self._run(pipe, "syndication_load")):
            key = synd_key(gid)
            result[gid] = {t.decode(): tuple(self._open(v, key, t.decode()).decode().split("\x1f", 1))
                           for t, v in fields.items()}
        return result

    async def save_syndication(self, updates: dict[str, dict[str, tuple[str, str] | None]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for gid, per_target in updates.items():
            gone = [t for t, v in per_target.items() if v is None]
            kept = {t: self._seal(f"{v[0]}\x1f{v[1]}".encode(), synd_key(gid), t) for t, v in per_target.items()
                    if v is not None}
            if gone:
                pipe.hdel(synd_key(gid), *gone)
            if kept:
                pipe.hset(synd_key(gid), mapping=kept)
        if updates:
            await self._run(pipe, "syndication_save")

    async def schedule(self, due: dict[str, int | None], kind: str = "consent") -> None:
        """Remember when each golden record's consent verdict (kind consent) or
        freshness (kind decay) can next change."""
        if not due:
            return
        pipe = self.client.pipeline(transaction=False)
        later = {gid: at for gid, at in due.items() if at is not None}
        gone = [gid for gid, at in due.items() if at is None]
        if later:
            pipe.zadd(f"{P}{kind}:due", later)
        if gone:
            pipe.zrem(f"{P}{kind}:due", *gone)
        await self._run(pipe, f"{kind}_schedule")

    async def take_due(self, now_ms: int, limit: int = 1000, kind: str = "consent") -> list[str]:
        """Golden ids whose consent verdict may have changed by now. They are
        pushed 60 s ahead, not removed: syndicating them sets their real next
        time, and one lost on the way is retried."""
        key = f"{P}{kind}:due"
        found = self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
        if found:
            self.client.zadd(key, {gid: now_ms + 60_000 for gid in found})
        return [gid.decode() for gid in found]
