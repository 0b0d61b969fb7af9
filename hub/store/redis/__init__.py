"""The hub's state in Redis: one class per port over a shared base, and
`RedisStore`, all of them over one client (what the workers, the CLI and the
workbench open).

  keys.py         the key layout (prefix, index hash tag, key names)
  scripts.py      the Lua sources
  client.py       clients by URL (one server or a cluster)
  base.py         RedisBase: client, keyring sealing, timing, script registration and calls
  identity.py     RedisIdentityIndex (hub.ports.IdentityIndex, with match parameters)
  golden.py       RedisGoldenStore (hub.ports.GoldenStore)
  lookup.py       RedisLookup: golden records by golden id or lookup key
  statements.py   RedisStatements: latest-wins items per member, under consent and surveys
  consent.py      RedisConsentStore (hub.ports.ConsentStore)
  surveys.py      RedisSurveyStore (hub.ports.SurveyStore)
  syndication.py  RedisSyndicationState (hub.ports.SyndicationState)
  schedules.py    RedisSchedules: activity, retention flags, consent and decay due times
  leases.py       RedisLeases (hub.ports.GoldenLeases): who masters a golden record now (the fused engine)
  rekey.py        RedisRekey: re-sealing with the keyring's current key

The identity index is where concurrent workers agree: one atomic Lua call
links a batch, reading and writing whichever records, blocking keys and golden
ids it meets. So every index key starts with one hash tag, `{hub:}` (the key
prefix in braces: with another prefix, another slot), and on Redis Cluster
the whole index is one slot on one shard. That is the price of an atomic
decision across records: the index does not spread over shards (about 2.8 GiB
at 1M source records, benchmarks/matcher.py), and that shard serves every
match. Everything kept per golden record or per source record has a hash tag
of its own and spreads over the shards.

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
slot. On one server, a fused pass and its after-delivery work each run inside
`writes_together` (base.py, client.py): the writes whose replies nobody reads
(`_write`, `_eval_each_later`: schedules, syndication state, decisions, lease
releases, ...) and the reads wanted only after another (`_soon`,
`_index_soon`, `_eval_each_soon`, the ports' `*_soon`) go out with the next
round trip, ahead of its own commands, or as the scope ends; on a cluster
they go out at once. tests/unit/test_key_layout.py checks every script's keys against one
slot without a cluster; tests/integration/test_redis_cluster.py runs the hub
on a real one.
"""

from __future__ import annotations

from hub.store.redis.consent import RedisConsentStore
from hub.store.redis.golden import RedisGoldenStore
from hub.store.redis.identity import RedisIdentityIndex
from hub.store.redis.leases import RedisLeases
from hub.store.redis.lookup import RedisLookup
from hub.store.redis.rekey import RedisRekey
from hub.store.redis.surveys import RedisSurveyStore
from hub.store.redis.syndication import RedisSyndicationState

__all__ = ["RedisConsentStore", "RedisGoldenStore", "RedisIdentityIndex", "RedisLeases", "RedisLookup", "RedisRekey",
           "RedisStore", "RedisSurveyStore", "RedisSyndicationState"]


class RedisStore(RedisIdentityIndex, RedisGoldenStore, RedisLookup, RedisConsentStore, RedisSurveyStore,
                 RedisSyndicationState, RedisRekey, RedisLeases):
    """All of the hub's Redis state behind the ports in hub.ports, over one
    client and keyring: every port class's methods on one object
    (`RedisStore.from_url(url, keyring)`)."""
