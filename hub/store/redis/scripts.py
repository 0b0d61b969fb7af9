"""The Lua the Redis store runs, as source strings: which keys each script may
touch and what it does atomically. A leaf: the port classes register these
(hub.store.redis.base.RedisBase._script, which adds the cluster shebang).

Index scripts get the index prefix (hub.store.redis.keys.IDX) as KEYS[1] and
build every key name from it inside Lua, so all they touch is in the index's
slot; PUT_LATEST, SWAP, LEASE and RELEASE touch the one per-record key they are given, REPLACE a golden
record's hash and its lease (one slot: the golden id's hash tag).
"""

# Every index script gets IDX as KEYS[1] and names keys only as KEYS[1] .. <kind>:<name>.

BLOCKS = """
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

# The golden ids merged into each of these and not yet folded in by the master: one call per batch, not a
# command per golden record.
FOLDS = """
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = redis.call('SMEMBERS', KEYS[1] .. 'fold:' .. ARGV[i])
end
return out
"""

# ARGV[1] '1': with the blocking keys (the batch's own records); '0': without (a candidate needs none).
# ARGV[2] '1': each with the size of its golden record (source records held; the guardrails ask it of the
# candidates' golden records), counted once per golden record, read with the golden id in the same step.
MEMBERS = """
local out = {}
local with_blocks, with_sizes = ARGV[1] == '1', ARGV[2] == '1'
local sizes = {}
for i = 3, #ARGV do
  local key = KEYS[1] .. 'mem:' .. ARGV[i]
  local row
  if with_blocks then
    row = redis.call('HMGET', key, 'gid', 'f', 'b')
  else
    row = redis.call('HMGET', key, 'gid', 'f')
  end
  if with_sizes then
    local gid = row[1]
    if gid then
      if sizes[gid] == nil then sizes[gid] = redis.call('SCARD', KEYS[1] .. 'gm:' .. gid) end
      row[#row + 1] = sizes[gid]
    else
      row[#row + 1] = 0
    end
  end
  out[#out + 1] = row
end
return out
"""

# Links records in order, each as if alone: a record already in the index
# keeps its golden id (re-matching is an explicit act), and a golden id merged
# away is followed to its survivor. Each record carries the versions of its
# blocking keys as read when it was decided; if another worker has added a
# member under one of them since, the script stops before that record and the
# caller decides it again, so two workers matching the same person at the
# same moment cannot found two golden records. One atomic call per batch.
LINK_MANY = """
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

# Term counts (ARGV[3 .. n+2], n = ARGV[1]); for the g golden ids after them
# (g = ARGV[2]), how many source records each holds.
TALLIES = """
local idx, n, g = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local counts = {}
for first = 3, n + 2, 1000 do  -- unpack in slices: Lua's stack takes a few thousand values at most
  for _, c in ipairs(redis.call('HMGET', idx .. 'tf', unpack(ARGV, first, math.min(first + 999, n + 2)))) do
    counts[#counts + 1] = c or 0
  end
end
local sizes = {}
for i = n + 3, n + g + 2 do sizes[#sizes + 1] = redis.call('SCARD', idx .. 'gm:' .. ARGV[i]) end
return {counts, sizes}
"""

CONSTRAINTS = """
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
MOVE = """
local idx, member, to = KEYS[1], ARGV[1], ARGV[2]
local memkey = idx .. 'mem:' .. member
local from = redis.call('HGET', memkey, 'gid')
if not from then return false end
redis.call('HSET', memkey, 'gid', to)
redis.call('SREM', idx .. 'gm:' .. from, member)
redis.call('SADD', idx .. 'gm:' .. to, member)
return from
"""

MAX_FOLD_READS = 1000

# Each golden id followed to its survivor (itself unless merged away); the
# hop limit guards a lookup against a cycle no code path should make.
_SURVIVOR = """
local function survivor(gid)
  local hops = 0
  local fwd = redis.call('GET', KEYS[1] .. 'fwd:' .. gid)
  while fwd and hops < 64 do
    gid = fwd; hops = hops + 1
    fwd = redis.call('GET', KEYS[1] .. 'fwd:' .. gid)
  end
  return gid
end
"""

FORWARD = _SURVIVOR + """
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = survivor(ARGV[i])
end
return out
"""

# FORWARD, and FOLDS of each survivor: where a master pass's golden ids stand, in one call; and the FOLDS
# of what those absorbed, level by level (a merged-away record may itself have absorbed others), so the
# master learns every fold it has to make in this one read. MAX_FOLD_READS bounds the levels' reads.
FORWARD_FOLDS = _SURVIVOR + """
local idx = KEYS[1]
local out, seen, frontier = {}, {}, {}
for i = 1, #ARGV do
  local gid = survivor(ARGV[i])
  out[#out + 1] = {gid, redis.call('SMEMBERS', idx .. 'fold:' .. gid)}
  seen[gid] = true
end
for _, row in ipairs(out) do
  for _, absorbed in ipairs(row[2]) do
    if not seen[absorbed] then seen[absorbed] = true; frontier[#frontier + 1] = absorbed end
  end
end
local deeper, read = {}, 0
while #frontier > 0 and read < """ + str(MAX_FOLD_READS) + """ do
  local below = {}
  for _, gid in ipairs(frontier) do
    local folds = redis.call('SMEMBERS', idx .. 'fold:' .. gid)
    deeper[#deeper + 1] = {gid, folds}
    read = read + 1
    for _, absorbed in ipairs(folds) do
      if not seen[absorbed] then seen[absorbed] = true; below[#below + 1] = absorbed end
    end
  end
  frontier = below
end
return {out, deeper}
"""

# Latest statement per (purpose, channel), or answer per survey, wins by its
# own time; equal times are settled by a keyed digest of the item (the sealed
# body is random-looking and differs on every write), so every worker agrees.
# The same item again counts as a change: it may be a retried batch whose first
# pass stored it and died before the golden record was recomputed.
PUT_LATEST = """
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
SWAP = """
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
#
# Fenced by the record's lease (KEYS[2], the same slot) when ARGV[1] names its
# holder: a master pass that held on past its lease (stalled, say, while a
# broker outage held up its delivery) writes nothing once another has the
# record, and hears so (0). ARGV[1] empty: no lease (the staged engine, where
# customer.linked's partitions give each record one master). No field: the
# record deleted.
REPLACE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

# scripts that only read: on a cluster they are flagged so, which lets them run when Redis is out of memory
READ_ONLY = (BLOCKS, MEMBERS, FOLDS, CONSTRAINTS, FORWARD, FORWARD_FOLDS, TALLIES)

# A golden record's lease (hub:lease:{<gid>}, the record's own slot): taken when
# free or renewed by its holder, never taken from another holder before it expires.
# Refused, it notes who waits (KEYS[2], hub:leasew:{<gid>}, a set of owners, for as
# long as the lease asked for), in the same step as the refusal, so the holder's
# release, however soon, knows to say so (RELEASE).
LEASE = """
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 0
"""

# Given back only by its holder: one that expired and was taken since is not someone else's to drop.
# Given back while owners wait (KEYS[2]): a signal each for their BLPOP (KEYS[3], hub:leaser:{<gid>}),
# short-lived so a waiter that gave up leaves none for long.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if KEYS[2] then
    local waiting = redis.call('SCARD', KEYS[2])
    if waiting > 0 then
      redis.call('DEL', KEYS[2])
      for _ = 1, math.min(waiting, 64) do
        redis.call('RPUSH', KEYS[3], '1')
      end
      redis.call('PEXPIRE', KEYS[3], 1000)
    end
  end
  return 1
end
return 0
"""
