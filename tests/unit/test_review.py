"""The review queue: its state transitions (pure), and the same behaviour
from the in-memory and the Redis store, keys in one Redis Cluster slot."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import key_slot

from hub import review
from hub.review import MemoryReviewStore, RedisReviewStore, ReviewError

NOW = 1_800_000_000_000


def decision(member="pos:P2", candidates=("crm:C1",), score=4.5, decision_id=None):
    source, source_id = member.split(":", 1)
    return {"decision_id": decision_id or f"D-{member}", "source": source, "source_id": source_id,
            "golden_id": "G-new", "outcome": "review", "score": score, "upper_threshold": 8.0,
            "lower_threshold": 3.0, "merged_golden_ids": [], "blocking_keys_skipped": 0, "decided_at": NOW - 5000,
            "candidates": [{"golden_id": f"G-{c}", "member": c, "score": score,
                            "comparisons": [{"attribute": "given_name", "level": "exact", "weight": 6.4}]}
                           for c in candidates]}


def test_a_decision_becomes_an_open_item_once():
    item = review.receive(None, decision(), NOW)
    assert item["state"] == review.OPEN and item["member"] == "pos:P2" and item["queued_at"] == NOW
    assert review.receive(item, decision(), NOW + 1) is None  # read twice: held as it is


def test_link_sends_link_and_its_undo_splits_then_releases():
    item = review.receive(None, decision(candidates=("crm:C1", "web:W1")), NOW)
    resolved, actions = review.resolve(item, "stella", review.LINK, ["crm:C1"], NOW + 10)
    assert actions == [review.Action("link", "pos:P2", ("crm:C1",))]
    assert resolved["state"] == review.RESOLVED and resolved["resolved_by"] == "stella"
    assert resolved["claimed_by"] == "stella"  # deciding an open item claims it on the way
    reopened, undo = review.undo(resolved, "stella", NOW + 20)
    assert undo == [review.Action("split", "pos:P2", ("crm:C1",)), review.Action("release", "pos:P2", ("crm:C1",))]
    assert reopened["state"] == review.OPEN and reopened["resolution"] is None and reopened["others"] == []
    assert [entry["what"] for entry in reopened["log"]] == ["queued", "link with crm:C1", "undid link"]


def test_keep_apart_sends_split_and_its_undo_only_releases():
    item = review.receive(None, decision(candidates=("crm:C1", "web:W1")), NOW)
    resolved, actions = review.resolve(item, "stella", review.APART, ["web:W1", "crm:C1"], NOW)
    assert actions == [review.Action("split", "pos:P2", ("crm:C1", "web:W1"))]
    _, undo = review.undo(resolved, "ada", NOW)
    assert undo == [review.Action("release", "pos:P2", ("crm:C1", "web:W1"))]


def test_claims_belong_to_their_steward():
    item = review.claim(review.receive(None, decision(), NOW), "stella", NOW)
    assert item["state"] == review.CLAIMED and item["claimed_by"] == "stella"
    with pytest.raises(ReviewError, match="claimed by stella"):
        review.claim(item, "sam", NOW)
    with pytest.raises(ReviewError, match="claimed by stella"):
        review.resolve(item, "sam", review.LINK, ["crm:C1"], NOW)
    with pytest.raises(ReviewError, match="only they or an admin"):
        review.unclaim(item, "sam", NOW)
    assert review.unclaim(item, "ada", NOW, admin=True)["state"] == review.OPEN
    assert review.unclaim(item, "stella", NOW)["claimed_by"] is None


def test_what_may_not_be_done():
    item = review.receive(None, decision(), NOW)
    with pytest.raises(ReviewError, match="choose among the candidates"):
        review.resolve(item, "stella", review.LINK, ["crm:SOMEONE-ELSE"], NOW)
    with pytest.raises(ReviewError, match="choose among the candidates"):
        review.resolve(item, "stella", review.LINK, [], NOW)
    with pytest.raises(ReviewError, match="nothing to undo"):
        review.undo(item, "stella", NOW)
    resolved, _ = review.resolve(item, "stella", review.APART, ["crm:C1"], NOW)
    with pytest.raises(ReviewError, match="already resolved by stella"):
        review.resolve(resolved, "sam", review.LINK, ["crm:C1"], NOW)
    with pytest.raises(ReviewError, match="already resolved"):
        review.claim(resolved, "sam", NOW)


def test_filters():
    item = review.receive(None, decision(score=4.0), NOW)
    assert review.matches(item, source="pos") and not review.matches(item, source="crm")
    assert review.matches(item, min_score=3.5, max_score=4.0) and not review.matches(item, min_score=4.1)
    assert not review.matches(item, older_than_ms=3_600_000, now_ms=NOW + 1000)
    assert review.matches(item, older_than_ms=3_600_000, now_ms=NOW + 3_600_000)


@pytest.fixture(params=["memory", "redis"])
def store(request, redis_url):
    if request.param == "memory":
        return MemoryReviewStore()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return RedisReviewStore(client)


def test_stores_keep_the_queue(store):
    assert store.add([decision("pos:P2"), decision("web:W3", score=6.0)], NOW) == 2
    assert store.add([decision("pos:P2")], NOW + 5) == 0  # idempotent by decision id
    assert [i["member"] for i in store.list(review.OPEN)] == ["pos:P2", "web:W3"]
    assert [i["member"] for i in store.list(review.OPEN, min_score=5)] == ["web:W3"]
    assert [i["member"] for i in store.list(review.OPEN, source="pos")] == ["pos:P2"]
    store.update("D-pos:P2", lambda i: (review.claim(i, "stella", NOW + 10), None))
    stats = store.stats(NOW + 60_000)
    assert (stats["open"], stats["claimed"], stats["resolved"], stats["oldest_waiting_s"]) == (1, 1, 0, 60.0)
    item, actions = store.update("D-pos:P2", lambda i: review.resolve(i, "stella", review.LINK, ["crm:C1"], NOW + 20))
    assert actions[0].kind == "link" and store.get("D-pos:P2")["state"] == review.RESOLVED
    assert [i["id"] for i in store.list(review.RESOLVED)] == ["D-pos:P2"]
    with pytest.raises(ReviewError, match="already resolved"):
        store.update("D-pos:P2", lambda i: (review.claim(i, "sam", NOW), None))
    assert store.get("D-pos:P2")["state"] == review.RESOLVED  # a refused change writes nothing
    assert [i["id"] for i in store.for_members(["crm:C1"])] == ["D-pos:P2", "D-web:W3"]  # as a candidate too
    with pytest.raises(ReviewError, match="no such"):
        store.update("nope", lambda i: (i, None))


def test_the_redis_queue_lives_in_one_cluster_slot(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = RedisReviewStore(client)
    store.add([decision("pos:P2"), decision("web:W3")], NOW)
    store.update("D-pos:P2", lambda i: review.resolve(i, "stella", review.APART, ["crm:C1"], NOW))
    keys = list(client.scan_iter("*review*"))
    assert len(keys) >= 5 and len({key_slot(k) for k in keys}) == 1
