"""The Redis store's key layout: the prefix, the identity index's hash tag, and
the name of every key the store reads or writes. A leaf: the port classes and
the Lua in hub.store.redis.scripts name keys as this does.

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
  hub:lease:{<gid>}    str   who masters the golden record now (the fused engine: hub.store.redis.leases),
                             expiring; in the slot of the record's hash
  hub:leasew:{<gid>}   set   owners refused that lease, waiting for it (added by the refusal, expiring)
  hub:leaser:{<gid>}   list  the holder gave it back: a signal per waiting owner, what they block on (1 s)
  hub:engine:{<app_id>} str  the engine the running workers of a consumer group run (HUB_ENGINE), expiring
                             unless a worker renews it: one group, one engine
Schedules (one key each, no script touches them):
  hub:activity, hub:retention:flagged, hub:consent:due, hub:decay:due
"""

from __future__ import annotations

P = "hub:"
# The identity index's prefix: the key prefix as a hash tag, so every index key
# is in one slot. As short as the per-record names it replaced ("hub:blk:{h}"
# and "{hub:}blk:h" are equally long): at 1M records a longer tag costs memory.
IDX = "{" + P + "}"


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


def lease_key(gid: str) -> str:
    return f"{P}lease:{{{gid}}}"


def lease_waiting_key(gid: str) -> str:
    """The owners refused the record's lease, waiting for it (scripts.LEASE)."""
    return f"{P}leasew:{{{gid}}}"


def lease_released_key(gid: str) -> str:
    """The signal a waiting pass blocks on, pushed when the holder gives the lease back (scripts.RELEASE)."""
    return f"{P}leaser:{{{gid}}}"


def engine_key(app_id: str) -> str:
    return f"{P}engine:{{{app_id}}}"
