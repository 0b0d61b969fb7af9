"""The steward review queue: doubtful match decisions waiting for a person.

The match stage puts every decision in the review band on `steward.review`
(a hub.MatchDecision); the workbench keeps each one here as an item with a
state: open, claimed (by whom, since when) and resolved (linked, kept apart,
by whom). What a decision sends to the workers is a list of steward actions
(hub.StewardAction): link = "link", keep apart = "split", and undo sends the
inverse ("split" then "release" to undo a link, "release" to undo a keep
apart), so the index ends where it was before the decision.

The transitions are pure (`receive`, `claim`, `unclaim`, `resolve`, `undo`);
`MemoryReviewStore` and `RedisReviewStore` keep items. Every Redis key of the
queue shares the hash tag `{hub:review}`: one slot, so a transition is one
MULTI/EXEC (optimistic, with WATCH) on Redis Cluster as on one server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import orjson

OPEN, CLAIMED, RESOLVED = "open", "claimed", "resolved"
STATES = (OPEN, CLAIMED, RESOLVED)
LINK, APART = "link", "apart"
# how a resolution reaches the workers, and how its undo does
ACTIONS = {LINK: ("link",), APART: ("split",)}
UNDO_ACTIONS = {LINK: ("split", "release"), APART: ("release",)}


class ReviewError(Exception):
    """A transition the item's state does not allow; the message says why, for the steward."""


@dataclass(frozen=True, slots=True)
class Action:
    """One hub.StewardAction to send: `kind` on `member` with `others`."""

    kind: str
    member: str
    others: tuple[str, ...]


def receive(held: dict | None, decision: dict, now_ms: int) -> dict | None:
    """The item a review decision makes; None when it is held already (the
    consumer may read a decision twice: the item keeps its state)."""
    if held is not None:
        return None
    return {
        "id": decision["decision_id"], "member": f"{decision['source']}:{decision['source_id']}",
        "source": decision["source"], "golden_id": decision["golden_id"], "score": decision["score"],
        "upper_threshold": decision["upper_threshold"], "lower_threshold": decision["lower_threshold"],
        "candidates": decision["candidates"], "decided_at": decision["decided_at"], "queued_at": now_ms,
        "state": OPEN, "claimed_by": None, "claimed_at": None, "resolution": None, "others": [],
        "resolved_by": None, "resolved_at": None, "log": [{"at": now_ms, "by": "hub", "what": "queued"}],
    }


def _logged(item: dict, user: str, what: str, now_ms: int, **changes) -> dict:
    return {**item, **changes, "log": [*item["log"], {"at": now_ms, "by": user, "what": what}]}


def claim(item: dict, user: str, now_ms: int) -> dict:
    if item["state"] == RESOLVED:
        raise ReviewError(f"already resolved by {item['resolved_by']}")
    if item["state"] == CLAIMED and item["claimed_by"] != user:
        raise ReviewError(f"claimed by {item['claimed_by']}")
    return _logged(item, user, "claimed", now_ms, state=CLAIMED, claimed_by=user, claimed_at=now_ms)


def unclaim(item: dict, user: str, now_ms: int, admin: bool = False) -> dict:
    if item["state"] != CLAIMED:
        raise ReviewError("not claimed")
    if item["claimed_by"] != user and not admin:
        raise ReviewError(f"claimed by {item['claimed_by']}: only they or an admin may release it")
    return _logged(item, user, "released", now_ms, state=OPEN, claimed_by=None, claimed_at=None)


def candidate_members(item: dict) -> list[str]:
    return [c["member"] for c in item["candidates"]]


def resolve(item: dict, user: str, resolution: str, others: list[str], now_ms: int) -> tuple[dict, list[Action]]:
    """Link the record with `others` (candidates of the item), or keep it
    apart from them. An open item is claimed on the way; one claimed by
    someone else is theirs to decide."""
    if resolution not in ACTIONS:
        raise ReviewError(f"unknown decision {resolution!r}")
    if item["state"] == RESOLVED:
        raise ReviewError(f"already resolved by {item['resolved_by']}")
    if item["state"] == CLAIMED and item["claimed_by"] != user:
        raise ReviewError(f"claimed by {item['claimed_by']}")
    known = candidate_members(item)
    others = sorted(set(others))
    if not others or any(o not in known for o in others):
        raise ReviewError("choose among the candidates shown")
    actions = [Action(kind, item["member"], tuple(others)) for kind in ACTIONS[resolution]]
    resolved = _logged(item, user, f"{resolution} with {', '.join(others)}", now_ms, state=RESOLVED,
                       resolution=resolution, others=others, resolved_by=user, resolved_at=now_ms,
                       claimed_by=item["claimed_by"] or user, claimed_at=item["claimed_at"] or now_ms)
    return resolved, actions


def undo(item: dict, user: str, now_ms: int) -> tuple[dict, list[Action]]:
    """Back to open, and the inverse actions: the records end as they were
    before the decision, with no steward constraint between them."""
    if item["state"] != RESOLVED:
        raise ReviewError("nothing to undo: not resolved")
    actions = [Action(kind, item["member"], tuple(item["others"])) for kind in UNDO_ACTIONS[item["resolution"]]]
    reopened = _logged(item, user, f"undid {item['resolution']}", now_ms, state=OPEN, resolution=None, others=[],
                       resolved_by=None, resolved_at=None, claimed_by=None, claimed_at=None)
    return reopened, actions


def matches(item: dict, source: str | None = None, min_score: float | None = None,
            max_score: float | None = None, older_than_ms: int | None = None, now_ms: int = 0) -> bool:
    """The queue's filters: source, score range, and age in the queue."""
    if source and item["source"] != source:
        return False
    score = item["score"] if item["score"] is not None else float("-inf")
    if min_score is not None and score < min_score:
        return False
    if max_score is not None and score > max_score:
        return False
    if older_than_ms is not None and now_ms - item["queued_at"] < older_than_ms:
        return False
    return True


def stats(items_by_state: dict[str, list[tuple[str, int]]], now_ms: int) -> dict:
    """Queue size per state and the age of the oldest item still waiting
    (open or claimed), from (id, queued_at) pairs."""
    waiting = [at for state in (OPEN, CLAIMED) for _, at in items_by_state.get(state, ())]
    return {"open": len(items_by_state.get(OPEN, ())), "claimed": len(items_by_state.get(CLAIMED, ())),
            "resolved": len(items_by_state.get(RESOLVED, ())),
            "oldest_waiting_s": round((now_ms - min(waiting)) / 1000, 1) if waiting else None}


class MemoryReviewStore:
    """The in-memory twin: for unit tests and a workbench without Redis."""

    def __init__(self):
        self.items: dict[str, dict] = {}
        self._lock = threading.Lock()

    def add(self, decisions: list[dict], now_ms: int) -> int:
        added = 0
        with self._lock:
            for decision in decisions:
                item = receive(self.items.get(decision["decision_id"]), decision, now_ms)
                if item is not None:
                    self.items[item["id"]] = item
                    added += 1
        return added

    def get(self, item_id: str) -> dict | None:
        return self.items.get(item_id)

    def update(self, item_id: str, change) -> tuple[dict, object]:
        """Apply `change(item) -> (new item, result)` atomically; ReviewError passes through."""
        with self._lock:
            item = self.items.get(item_id)
            if item is None:
                raise ReviewError("no such review item")
            new, result = change(item)
            self.items[item_id] = new
            return new, result

    def list(self, state: str, limit: int = 50, offset: int = 0, **filters) -> list[dict]:
        now_ms = filters.pop("now_ms", 0)
        found = sorted((i for i in self.items.values() if i["state"] == state),
                       key=lambda i: (i["resolved_at"] or 0) * -1 if state == RESOLVED else i["queued_at"])
        found = [i for i in found if matches(i, now_ms=now_ms, **filters)]
        return found[offset:offset + limit]

    def for_members(self, members: list[str]) -> list[dict]:
        wanted = set(members)
        return sorted((i for i in self.items.values()
                       if i["member"] in wanted or wanted & set(candidate_members(i))), key=lambda i: i["queued_at"])

    def stats(self, now_ms: int) -> dict:
        by_state: dict[str, list] = {}
        for item in self.items.values():
            by_state.setdefault(item["state"], []).append((item["id"], item["queued_at"]))
        return stats(by_state, now_ms)


TAG = "{hub:review}"
ITEM = TAG + ":item:"        # string: the item as JSON
STATE = TAG + ":state:"      # zset per state: id -> queued_at (resolved: resolved_at)
MEMBER = TAG + ":member:"    # set per source record: ids of items naming it (as the record or a candidate)

# An item stored only if absent, and indexed with it: the consumer's writes are idempotent by decision id.
_ADD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[3]) end
  return 1
end
return 0
"""


class RedisReviewStore:
    """The queue in Redis, all in the `{hub:review}` slot. Items hold no
    personal values (member keys, golden ids, comparison levels and
    weights), so they are not sealed."""

    def __init__(self, client):
        self.client = client
        self._add = client.register_script(_ADD)

    def add(self, decisions: list[dict], now_ms: int) -> int:
        added = 0
        for decision in decisions:
            item = receive(None, decision, now_ms)
            members = {item["member"], *candidate_members(item)}
            keys = [ITEM + item["id"], STATE + OPEN] + [MEMBER + m for m in sorted(members)]
            added += int(self._add(keys=keys, args=[orjson.dumps(item), item["queued_at"], item["id"]]))
        return added

    def get(self, item_id: str) -> dict | None:
        raw = self.client.get(ITEM + item_id)
        return orjson.loads(raw) if raw else None

    def update(self, item_id: str, change) -> tuple[dict, object]:
        """Optimistic: WATCH the item, compute the change, write it with its
        state index in one MULTI; start again if another writer came between."""
        import redis

        key = ITEM + item_id
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise ReviewError("no such review item")
                    item = orjson.loads(raw)
                    new, result = change(item)
                    pipe.multi()
                    pipe.set(key, orjson.dumps(new))
                    if new["state"] != item["state"]:
                        pipe.zrem(STATE + item["state"], item_id)
                        score = new["resolved_at"] if new["state"] == RESOLVED else new["queued_at"]
                        pipe.zadd(STATE + new["state"], {item_id: score})
                    pipe.execute()
                    return new, result
                except redis.WatchError:
                    continue

    def _load(self, ids: list[bytes]) -> list[dict]:
        if not ids:
            return []
        return [orjson.loads(raw) for raw in self.client.mget([ITEM + i.decode() for i in ids]) if raw]

    def list(self, state: str, limit: int = 50, offset: int = 0, scan_limit: int = 5000, **filters) -> list[dict]:
        """Oldest first (resolved: most recent first), filtered; at most
        `scan_limit` items of the state are looked at."""
        now_ms = filters.pop("now_ms", 0)
        if state == RESOLVED:
            ids = self.client.zrevrange(STATE + state, 0, scan_limit - 1)
        elif filters.get("older_than_ms") is not None:
            ids = self.client.zrangebyscore(STATE + state, "-inf", now_ms - filters["older_than_ms"], 0, scan_limit)
        else:
            ids = self.client.zrange(STATE + state, 0, scan_limit - 1)
        found = [i for i in self._load(ids) if matches(i, now_ms=now_ms, **filters)]
        return found[offset:offset + limit]

    def for_members(self, members: list[str]) -> list[dict]:
        if not members:
            return []
        ids = self.client.sunion([MEMBER + m for m in members])
        return sorted(self._load(sorted(ids)), key=lambda i: i["queued_at"])

    def stats(self, now_ms: int) -> dict:
        pipe = self.client.pipeline(transaction=False)
        for state in STATES:
            pipe.zcard(STATE + state)
        for state in (OPEN, CLAIMED):
            pipe.zrange(STATE + state, 0, 0, withscores=True)
        n_open, n_claimed, n_resolved, oldest_open, oldest_claimed = pipe.execute()
        waiting = [int(score) for _, score in oldest_open + oldest_claimed]
        return {"open": n_open, "claimed": n_claimed, "resolved": n_resolved,
                "oldest_waiting_s": round((now_ms - min(waiting)) / 1000, 1) if waiting else None}
