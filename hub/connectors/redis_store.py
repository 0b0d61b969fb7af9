"""Redis implementation of the identity index, golden store, consent store and
syndication state: the key layout and the Lua that makes each link atomic.

The identity index is where concurrent workers agree: one atomic Lua call
links a batch, reading and writing whichever records, blocking keys and golden
ids it meets. So every index key starts with one hash tag, `{hub:}` (the key
prefix in braces: with another prefix, another slot), and on Redis Cluster
the whole index is one slot on one shard. That is the price of an atomic
decision across records: the index does not spread over shards (about 2.8 GiB
at 1M source records, benchmarks/matcher.py), and that shard serves every
match. Everything kept per golden record or per source record has a hash tag
of its own and spreads over the shards.

Identity index (one slot):
  {hub:}mem:<member>       hash  gid, f (features, sealed), b (blocking key hashes), t (term keys counted in
                                 {hub:}tf), d (last match decision, sealed)
  {hub:}blk:<hash>         set   members found under one blocking key
  {hub:}bv:<hash>          str   version of that set: +1 whenever a member joins it
  {hub:}gm:<gid>           set   members of a golden record
  {hub:}fwd:<gid>          str   survivor of a golden record merged away
  {hub:}fold:<gid>         set   golden ids merged into this one, contributions not yet folded in by the master
  {hub:}deleted            zset  member -> time its source deleted it (older events for it are superseded)
  {hub:}apart:<member>     set   members a steward keeps apart from this one
  {hub:}pin:<member>       set   members a steward keeps together with this one
  {hub:}stats:constraints  str   steward constraints ever made (while 0, matching does not read them)
  {hub:}params             str   estimated match parameters (JSON), with {hub:}params:version
  {hub:}tf                 hash  term key -> records in the index holding it: a keyed hash of a compared
                                 value (t:<feature>:<value>) or "#<feature>" (records holding that feature),
                                 counted by the link script from the terms each member carries (mem field t)
Per record (a slot each):
  hub:gold:{<gid>}     hash  c:<member> (contribution, sealed), golden (sealed), audit (last audit event, sealed)
  hub:cons:{<member>}  hash  <purpose>|<channel> -> "<event_time>|<tie-break>|<statement, sealed>"
  hub:srv:{<member>}   hash  <survey id> -> "<responded_at>|<tie-break>|<answer, sealed>" (the latest per survey)
  hub:synd:{<gid>}     hash  <target> -> sealed "<key>\\x1f<projection hash>"
  hub:lk:{<hash>}      set   golden ids found by one identifier (keyed hash of loyalty id, e-mail, phone
                             or source record: hub/lookup.py), kept by the master with the golden records
Schedules (one key each, no script touches them):
  hub:activity, hub:retention:flagged, hub:consent:due, hub:decay:due

Sealed = AES-GCM with the keyring of hub.crypto, associated data "<key>|<field>":
no name, e-mail, phone or address is held in clear, and a value copied to
another key does not open. Key names hold source record keys
(<source>:<source_id>), golden ids and keyed hashes only. What the Lua
scripts must read (golden id, blocking hashes, a consent statement's time)
stays outside the sealed part.

The matcher's reads and links run as one Lua call per batch: redis-py spends
~10 µs of worker CPU per command, and a batch needs thousands of lookups.
Those scripts build key names inside Lua, from the index prefix they get as
KEYS[1]: a cluster client routes them by it, and every name they build is in
its slot. On a cluster (Redis 7 or later) every script starts with a `#!lua`
line, with which Redis refuses a key outside the declared slot instead of
accepting any key the node happens to hold (which would break when slots
move). No script reads keys of two kinds: a lookup reads the index, then the
golden records. Redis-py's cluster pipelines are not transactional and refuse
EVALSHA: pipelines here only batch independent commands, the per-member
consent and survey script goes through one plain pipeline per node
(_eval_each), and the one MULTI (the match parameters) stays inside the index
slot. tests/unit/test_key_layout.py checks every script's keys against one
slot without a cluster; tests/integration/test_redis_cluster.py runs the hub
on a real one.
"""

from __future__ import annotations

import functools
import hashlib
import time

import orjson
import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from hub import metrics
from hub.connectors.redis_client import client_from_url
from hub.crypto import Keyring, default_keyring
from hub.lookup import DECOY_GOLDEN_ID, decoy_golden
from hub.ports import BlockView, GoldenState, LinkRequest, MemberEntry

P = "hub:"
# The identity index's prefix: the key prefix as a hash tag, so every index key
# is in one slot. As short as the per-record names it replaced ("hub:blk:{h}"
# and "{hub:}blk:h" are equally long): at 1M records a longer tag costs memory.
IDX = "{" + P + "}"

# Every index script gets IDX as KEYS[1] and names keys only as KEYS[1] .. <kind>:<name>.

# Links records in order, each as if alone: a record already in the index
# keeps its golden id (re-matching is an explicit act), and a golden id merged
# away is followed to its survivor. Each record carries the versions of its
# blocking keys as read when it was decided; if another worker has added a
# member under one of them since, the script stops before that record and the
# caller decides it again, so two workers matching the same person at the
# same moment cannot found two golden records. One atomic call per batch.
_BLOCKS = """
local idx, limit = KEYS[1], tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local found = redis.call('SRANDMEMBER', idx .. 'blk:' .. ARGV[i], limit + 1)
  if #found > limit then found = {'*'} end
  table.insert(found, 1, redis.call('GET', idx .. 'bv:' .. ARGV[i]) or '0')
  out[#out + 1] = found
end
return out
"""

_MEMBERS = """
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = redis.call('HMGET', KEYS[1] .. 'mem:' .. ARGV[i], 'gid', 'f', 'b')
end
return out
"""

_LINK_MANY = """
local idx = KEYS[1]
local bumped = {}
-- term frequencies: a member's terms are counted while it is in the index
local tf = idx .. 'tf'
local recount = function(memkey, terms)
  local kept = {}
  for _, t in ipairs(terms) do kept[t] = true end
  local old = redis.call('HGET', memkey, 't')
  if old then
    for t in string.gmatch(old, '[^,]+') do
      if kept[t] then kept[t] = false
      elseif redis.call('HINCRBY', tf, t, -1) <= 0 then redis.call('HDEL', tf, t) end
    end
  end
  for _, t in ipairs(terms) do
    if kept[t] then kept[t] = false; redis.call('HINCRBY', tf, t, 1) end
  end
end
local link = function(member, gid, feats, blocks, absorbed_ids, terms)
  local memkey = idx .. 'mem:' .. member
  local current = redis.call('HGET', memkey, 'gid')
  if current then gid = current end
  local fwd = redis.call('GET', idx .. 'fwd:' .. gid)
  while fwd do gid = fwd; fwd = redis.call('GET', idx .. 'fwd:' .. gid) end
  local wanted = {}
  for _, h in ipairs(blocks) do wanted[h] = true end
  local old = redis.call('HGET', memkey, 'b')
  if old then
    for h in string.gmatch(old, '[^,]+') do
      if not wanted[h] then redis.call('SREM', idx .. 'blk:' .. h, member) end
    end
  end
  for _, h in ipairs(blocks) do
    if redis.call('SADD', idx .. 'blk:' .. h, member) == 1 then
      redis.call('INCR', idx .. 'bv:' .. h)
      bumped[h] = (bumped[h] or 0) + 1
    end
  end
  if current and current ~= gid then redis.call('SREM', idx .. 'gm:' .. current, member) end
  recount(memkey, terms)
  redis.call('HSET', memkey, 'gid', gid, 'f', feats, 'b', table.concat(blocks, ','), 't', table.concat(terms, ','))
  redis.call('SADD', idx .. 'gm:' .. gid, member)
  for _, absorbed in ipairs(absorbed_ids) do
    while true do
      local nxt = redis.call('GET', idx .. 'fwd:' .. absorbed)
      if not nxt then break end
      absorbed = nxt
    end
    if absorbed ~= gid then
      for _, m in ipairs(redis.call('SMEMBERS', idx .. 'gm:' .. absorbed)) do
        redis.call('HSET', idx .. 'mem:' .. m, 'gid', gid)
        redis.call('SADD', idx .. 'gm:' .. gid, m)
      end
      redis.call('DEL', idx .. 'gm:' .. absorbed)
      redis.call('SET', idx .. 'fwd:' .. absorbed, gid)
      -- the merge must reach the golden store even if the linked record saying so is lost
      redis.call('SADD', idx .. 'fold:' .. gid, absorbed)
    end
  end
  return gid
end
local unlink = function(member)
  local memkey = idx .. 'mem:' .. member
  local gid = redis.call('HGET', memkey, 'gid')
  if not gid then return '' end
  local old = redis.call('HGET', memkey, 'b')
  if old then
    for h in string.gmatch(old, '[^,]+') do redis.call('SREM', idx .. 'blk:' .. h, member) end
  end
  redis.call('SREM', idx .. 'gm:' .. gid, member)
  recount(memkey, {})
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
      local now = tonumber(redis.call('GET', idx .. 'bv:' .. seen[1]) or '0')
      if now ~= seen[2] + (bumped[seen[1]] or 0) then return out end
    end
    out[#out + 1] = link(req[1], req[2], ARGV[req[3]], req[4], req[5], req[7] or {})
  end
end
return out
"""

# Term counts (ARGV[2 .. n+1], n = ARGV[1]) and, for the golden ids after
# them, how many source records each holds.
_TALLIES = """
local idx, n = KEYS[1], tonumber(ARGV[1])
local counts = {}
for first = 2, n + 1, 1000 do  -- unpack in slices: Lua's stack takes a few thousand values at most
  for _, c in ipairs(redis.call('HMGET', idx .. 'tf', unpack(ARGV, first, math.min(first + 999, n + 1)))) do
    counts[#counts + 1] = c or 0
  end
end
local sizes = {}
for i = n + 2, #ARGV do sizes[#sizes + 1] = redis.call('SCARD', idx .. 'gm:' .. ARGV[i]) end
return {counts, sizes}
"""

_CONSTRAINTS = """
local idx = KEYS[1]
if tonumber(redis.call('GET', idx .. 'stats:constraints') or '0') == 0 then return {} end
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = {redis.call('SMEMBERS', idx .. 'apart:' .. ARGV[i]),
                   redis.call('SMEMBERS', idx .. 'pin:' .. ARGV[i])}
end
return out
"""

# Moves one record to another golden record (a steward's split).
_MOVE = """
local idx, member, to = KEYS[1], ARGV[1], ARGV[2]
local memkey = idx .. 'mem:' .. member
local from = redis.call('HGET', memkey, 'gid')
if not from then return false end
redis.call('HSET', memkey, 'gid', to)
redis.call('SREM', idx .. 'gm:' .. from, member)
redis.call('SADD', idx .. 'gm:' .. to, member)
return from
"""

# Each golden id followed to its survivor (itself unless merged away); the
# hop limit guards a lookup against a cycle no code path should make.
_FORWARD = """
local out = {}
for i = 1, #ARGV do
  local gid, hops = ARGV[i], 0
  local fwd = redis.call('GET', KEYS[1] .. 'fwd:' .. gid)
  while fwd and hops < 64 do
    gid = fwd; hops = hops + 1
    fwd = redis.call('GET', KEYS[1] .. 'fwd:' .. gid)
  end
  out[#out + 1] = gid
end
return out
"""

# Latest statement per (purpose, channel), or answer per survey, wins by its
# own time; equal times are settled by a keyed digest of the item (the sealed
# body is random-looking and differs on every write), so every worker agrees.
# The same item again counts as a change: it may be a retried batch whose first
# pass stored it and died before the golden record was recomputed.
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
  elseif at == held_at and tie == held_tie then
    changed = 1
  end
end
return changed
"""

# Re-sealing a hash's values only where nobody changed them since they were
# read, so `hub rekey` can run beside working workers.
_SWAP = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""

# A golden record's hash replaced in one step: a crash between deleting the old
# hash and writing the new one would lose the members the batch did not touch,
# and the retried batch rebuilds the record from what it finds.
_REPLACE = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

# scripts that only read: on a cluster they are flagged so, which lets them run when Redis is out of memory
_READ_ONLY = (_BLOCKS, _MEMBERS, _CONSTRAINTS, _FORWARD, _TALLIES)


def _index_key(kind: str):
    def key(name: str) -> str:
        return f"{IDX}{kind}:{name}"
    key.__name__ = f"{kind}_key"
    return key


# <kind>_key(name): the index's key of one member, blocking hash or golden id (the Lua names them alike)
mem_key, blk_key, bv_key, gm_key, fwd_key, fold_key, apart_key, pin_key = map(
    _index_key, ("mem", "blk", "bv", "gm", "fwd", "fold", "apart", "pin"))
DELETED = f"{IDX}deleted"
DELETED_FROM = f"{IDX}deleted_from"  # member -> the golden id it was deleted from
CONSTRAINTS = f"{IDX}stats:constraints"
PARAMS = f"{IDX}params"
PARAMS_VERSION = f"{IDX}params:version"
TERMS = f"{IDX}tf"


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

    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.keyring = keyring or default_keyring()
        # id(contribution) -> (contribution, where, ciphertext) as loaded; holding the object keeps its id unique
        self._sealed: dict[int, tuple[dict, str, bytes]] = {}
        self._link_many = self._script(_LINK_MANY)
        self._blocks = self._script(_BLOCKS)
        self._members = self._script(_MEMBERS)
        self._constraints = self._script(_CONSTRAINTS)
        self._tallies = self._script(_TALLIES)
        self._move = self._script(_MOVE)
        self._forward = self._script(_FORWARD)
        self._put_latest_script = self._script(_PUT_LATEST)
        self._swap = self._script(_SWAP)
        self._replace = self._script(_REPLACE)

    @classmethod
    def from_url(cls, url: str, keyring: Keyring | None = None) -> "RedisStore":
        """`redis://`, `rediss://`, `unix://` for one server; `redis+cluster://host:port[,host:port]` for a cluster."""
        return cls(client_from_url(url, decode_responses=False, socket_timeout=30, health_check_interval=30),
                   keyring)

    def _script(self, source: str):
        if self.cluster:  # Redis >= 7: the shebang makes the server refuse keys outside the declared slot
            source = ("#!lua flags=no-writes\n" if source in _READ_ONLY else "#!lua\n") + source
        return self.client.register_script(source)

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

    def _timed(self, operation: str, call, *args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        except Exception:
            metrics.REDIS_ERRORS.labels(operation).inc()
            raise
        finally:
            metrics.REDIS_SECONDS.labels(operation).observe(time.perf_counter() - started)

    async def _run(self, pipe, operation: str):
        return self._timed(operation, pipe.execute)

    async def _index(self, script, args: list, operation: str):
        """One call of an index script, routed to the index's slot. Called
        directly rather than in a pipeline: a pipeline asks SCRIPT EXISTS
        first, a round trip per call."""
        return self._timed(operation, script, keys=[IDX], args=args)

    def _eval_each(self, script, calls: list[tuple[str, list]]) -> list:
        """A single-key script once per (key, args), pipelined. A cluster
        client's pipeline refuses EVALSHA, so there each node gets a plain
        pipeline of its own; a call that meets a node without the script, or
        a slot that moved meanwhile, is made again through the cluster client,
        which loads scripts and follows redirections."""
        groups: dict[int, tuple[redis.Redis, list[int]]] = {}
        for i, (key, _) in enumerate(calls):
            client = self.client.get_node_from_key(key).redis_connection if self.cluster else self.client
            groups.setdefault(id(client), (client, []))[1].append(i)
        results: list = [None] * len(calls)
        for client, positions in groups.values():
            pipe = client.pipeline(transaction=False)
            for i in positions:
                key, args = calls[i]
                pipe.evalsha(script.sha, 1, key, *args)
            for i, result in zip(positions, pipe.execute(raise_on_error=False)):
                results[i] = result
        for i, result in enumerate(results):
            if isinstance(result, (NoScriptError, MovedError, AskError, TryAgainError)):
                key, args = calls[i]
                results[i] = script(keys=[key], args=args)
            elif isinstance(result, Exception):
                raise result
        return results

    def rekey(self, batch: int = 500) -> dict[str, int]:
        """Re-seal every sealed value not sealed with the keyring's current key
        (after a new key was put first). Safe beside running workers: a value
        changed meanwhile is left alone (a worker wrote it with the current key)."""
        counts = {"scanned": 0, "resealed": 0}
        for pattern in (f"{IDX}mem:*", f"{P}gold:*", f"{P}cons:*", f"{P}srv:*", f"{P}synd:*"):
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
        swaps: dict[bytes, list] = {}
        for key, fields in zip(keys, pipe.execute()):
            name = key.decode()
            for field, value in fields.items():
                field_name = field.decode()
                if name.startswith((f"{P}cons:", f"{P}srv:")):
                    at, tie, sealed = value.split(b"|", 2)
                    prefix = at + b"|" + tie + b"|"
                elif name.startswith(f"{IDX}mem:") and field_name not in ("f", "d"):
                    continue
                else:
                    sealed, prefix = value, b""
                counts["scanned"] += 1
                if self.keyring.is_current(sealed):
                    continue
                fresh = self._seal(self._open(sealed, name, field_name), name, field_name)
                swaps.setdefault(key, []).extend((field, value, prefix + fresh))
        if swaps:
            counts["resealed"] += sum(int(n) for n in self._eval_each(self._swap, list(swaps.items())))

    # identity index
    async def members(self, members: list[str]) -> dict[str, MemberEntry]:
        if not members:
            return {}
        rows = await self._index(self._members, members, "index_members")
        found = {}
        for member, (gid, feats, blocks) in zip(members, rows):
            if gid is not None:
                found[member] = MemberEntry(member, gid.decode(), orjson.loads(self._open(feats, mem_key(member), "f")),
                                            blocks.decode().split(",") if blocks else [])
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
        if not terms and not golden_ids:
            return {}, {}
        counts, sizes = await self._index(self._tallies, [len(terms), *terms, *golden_ids], "index_tallies")
        return ({t: int(c) for t, c in zip(terms, counts) if int(c)}, {g: int(n) for g, n in zip(golden_ids, sizes)})

    async def constraints(self, members: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Steward constraints per member: (kept apart from, kept together with)."""
        if not members:
            return {}
        rows = await self._index(self._constraints, members, "index_constraints")
        result = {}
        for member, (apart, pinned) in zip(members, rows or ()):
            if apart or pinned:
                result[member] = ({m.decode() for m in apart}, {m.decode() for m in pinned})
        return result

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
            self.client.zrem(DELETED, *members)
            self.client.hdel(DELETED_FROM, *members)
        return await self.link(list(members))

    async def tombstones(self, members: list[str]) -> dict[str, int]:
        if not members:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(DELETED, members)
        (scores,) = await self._run(pipe, "index_tombstones")
        return {m: int(s) for m, s in zip(members, scores) if s is not None}

    async def add_tombstones(self, deleted: dict[str, int]) -> None:
        if deleted:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(DELETED, deleted, gt=True)
            await self._run(pipe, "index_tombstones")

    async def remember_deleted_from(self, golden_ids: dict[str, str]) -> None:
        if golden_ids:
            self._timed("index_tombstones", self.client.hset, DELETED_FROM, mapping=golden_ids)

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
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.smembers(fold_key(gid))
        rows = await self._run(pipe, "index_folds")
        return {gid: sorted(m.decode() for m in found) for gid, found in zip(golden_ids, rows) if found}

    async def folded(self, folds: dict[str, list[str]]) -> None:
        if folds:
            pipe = self.client.pipeline(transaction=False)
            for gid, absorbed in folds.items():
                pipe.srem(fold_key(gid), *absorbed)
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
        """In an order a crash can stop anywhere: a retried batch finds each
        golden record as it was or as it is now, never half written. What is
        derived from the records (lookup keys, activity) goes first, since a
        retry that finds a record already written derives nothing; merged-away
        records go last, once the survivors hold their members."""
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
            await self._run(pipe, "golden_save")
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
            replacements.append((key, fields))
        if replacements:
            self._timed("golden_save", self._eval_each, self._replace, replacements)
        if deleted:  # syndication state stays: the syndicate stage tombstones from it
            pipe = self.client.pipeline(transaction=False)
            for gid in deleted:
                pipe.delete(gold_key(gid))
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
        lookup index key; one or two round trips. Synchronous: called from web
        views, where it costs less than the asyncio client's machinery."""
        found = self._timed("lookup", self._lookup_sealed, golden_id, index_key, limit)
        records = sorted((orjson.loads(self._open(sealed, gold_key(gid), "golden")) for gid, sealed in found.items()
                          if sealed), key=lambda g: g["golden_id"])
        if not records:  # found nothing: open and parse a record anyway, as a found one costs (hub.lookup.decoy_golden)
            orjson.loads(self._open(self._sealed_decoy, gold_key(DECOY_GOLDEN_ID), "golden"))
        return records

    @functools.cached_property
    def _sealed_decoy(self) -> bytes:
        return self._seal(orjson.dumps(decoy_golden()), gold_key(DECOY_GOLDEN_ID), "golden")

    def _lookup_sealed(self, golden_id: str | None, index_key: str | None, limit: int) -> dict[str, bytes | None]:
        # the index (forwarding) and the golden records live in different slots: read one, then the other
        if golden_id is not None:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(fwd_key(golden_id))  # merged away: the survivor, found in the index
            pipe.hget(gold_key(golden_id), "golden")
            merged, sealed = pipe.execute()
            if merged is None:
                return {golden_id: sealed}
            (survivor,) = self._forward(keys=[IDX], args=[golden_id])
            gids = [survivor.decode()]
        else:
            gids = [gid.decode() for gid in self.client.srandmember(lookup_key(index_key), limit)]
        if len(gids) <= 1:  # the usual answer; a pipeline costs more client CPU than the command
            # an identifier nobody holds reads a record too (one that never exists): the round trips a lookup
            # makes must not tell who exists
            sealed = self.client.hget(gold_key(gids[0] if gids else DECOY_GOLDEN_ID), "golden")
            return {gids[0]: sealed} if gids else {}
        pipe = self.client.pipeline(transaction=False)
        for gid in gids:
            pipe.hget(gold_key(gid), "golden")
        return dict(zip(gids, pipe.execute()))

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
        member whose hash changed or already held one of the items."""
        members = [m for m, found in items.items() if found]
        if not members:
            return {}
        calls = []
        for member in members:
            args = []
            hash_key_ = key(member)
            for item in items[member]:
                field = slot(item)
                body = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
                tie = hashlib.blake2s(body, digest_size=8).hexdigest()
                args += [field, item[at], tie, self._seal(body, hash_key_, field)]
            calls.append((hash_key_, args))
        changed = self._timed(operation, self._eval_each, self._put_latest_script, calls)
        return {m: bool(c) for m, c in zip(members, changed)}

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
        """Store statements per member; True for each member whose consent changed (or holds one already)."""
        return await self._put_latest(cons_key, statements, lambda st: f"{st['purpose']}|{st['channel']}",
                                      "event_time", "consent_put")

    async def get(self, members: list[str]) -> dict[str, list[dict]]:
        return await self._latest(cons_key, members, "consent_get")

    async def forget(self, members: list[str]) -> None:
        if members:
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.delete(cons_key(member))
            await self._run(pipe, "consent_forget")

    # survey store
    async def put_surveys(self, answers: dict[str, list[dict]]) -> dict[str, bool]:
        """Store answers per member, the latest per survey; True for each member whose answers changed
        (or hold one already)."""
        return await self._put_latest(survey_key, answers, lambda a: a["survey_id"], "responded_at", "survey_put")

    async def get_surveys(self, members: list[str]) -> dict[str, list[dict]]:
        found = await self._latest(survey_key, members, "survey_get")
        return {m: answers for m, answers in found.items() if answers}

    async def forget_surveys(self, members: list[str]) -> None:
        if members:
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.delete(survey_key(member))
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
