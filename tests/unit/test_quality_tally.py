"""Data-quality counters: per day, source and attribute, from standardised
records and dead letters; the report's completeness and validity."""

from __future__ import annotations

import redis
from redis.cluster import key_slot

from hub.quality_tally import MemoryTallyStore, RedisTallyStore, day_of, days_back, report, tally
from hub.standardise import standardise_and_score
from hub.store.redis.client import HubRedis, client_from_url

NOW = 1_767_225_600_000  # 2026-01-01T00:00Z


def standardised(source, sid, **values):
    return standardise_and_score({"source": source, "source_id": sid, "event_time": NOW, **values})


def test_counts_per_source_and_attribute():
    records = [standardised("crm", "1", given_name="Ann", family_name="Lee", emails=[{"address": "ann@gmail.com"}],
                            phones=[{"number": "12"}]),  # a phone that cannot be one: dropped
               standardised("crm", "2", given_name="Bo", emails=[{"address": "bo@gmail.com"},
                                                                  {"address": "bo.two@gmail.com"}]),
               standardised("pos", "3", family_name="Ng")]
    counts = tally(records, [("crm", "schema_mismatch"), ("pos", "oversized")], NOW)
    assert list(counts) == ["2026-01-01"]
    fields = counts["2026-01-01"]
    assert fields["crm|*|records"] == 2 and fields["pos|*|records"] == 1
    assert fields["crm|given_name|present"] == 2 and fields["crm|family_name|present"] == 1
    assert fields["crm|emails|present"] == 2 and fields["crm|emails|values"] == 3
    assert fields["crm|phones|dropped"] == 1 and fields["crm|phones|present"] == 0
    assert fields["crm|dlq|schema_mismatch"] == 1 and fields["pos|dlq|oversized"] == 1
    summary = report(counts)["sources"]
    assert summary["crm"]["attributes"]["given_name"]["completeness"] == 1.0
    assert summary["crm"]["attributes"]["family_name"]["completeness"] == 0.5
    assert summary["crm"]["attributes"]["phones"]["validity"] == 0.0
    assert summary["crm"]["attributes"]["emails"]["validity"] == 1.0
    assert summary["crm"]["attributes"]["birth_date"]["validity"] is None  # nothing supplied
    assert summary["crm"]["dlq_by_reason"] == {"schema_mismatch": 1} and summary["crm"]["dlq_rate"] == round(1 / 3, 4)


def test_deletions_and_empty_batches_count_nothing():
    record, quality = standardised("crm", "1", given_name="Ann")
    assert tally([({**record, "op": "delete"}, quality)], [], NOW) == {}
    assert tally([], [], NOW) == {}


def test_days_and_trends():
    assert days_back(NOW + 3_600_000, 3) == ["2025-12-30", "2025-12-31", "2026-01-01"]
    assert day_of(NOW - 1) == "2025-12-31"
    store = MemoryTallyStore()
    store.add(tally([standardised("crm", "1", given_name="Ann")], [], NOW - 86_400_000))
    store.add(tally([standardised("crm", "2", given_name="Bo")], [("crm", "absurd_value")], NOW))
    read = store.read(days_back(NOW, 2))
    trend = report(read)
    assert trend["sources"]["crm"]["records"] == 2 and trend["sources"]["crm"]["dead_letters"] == 1
    assert [trend["days"][d]["crm"]["records"] for d in sorted(trend["days"])] == [1, 1]


def test_redis_store_adds_up_like_the_memory_one(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    batch = tally([standardised("crm", "1", given_name="Ann", emails=[{"address": "ann@gmail.com"}])],
                  [("pos", "not_decodable")], NOW)
    memory, stored = MemoryTallyStore(), RedisTallyStore(client)
    for _ in range(2):
        memory.add(batch)
        stored.add(batch)
    days = days_back(NOW, 2)
    assert stored.read(days) == memory.read(days)
    assert stored.read(days)["2026-01-01"]["crm|emails|values"] == 2
    key = next(client.scan_iter("hub:quality:*"))
    assert key == b"hub:quality:{2026-01-01}" and 0 < client.ttl(key) <= 400 * 86_400
    assert key_slot(key) == key_slot(b"{2026-01-01}")


def test_a_batch_is_counted_in_one_command_even_after_the_server_lost_its_scripts(redis_url):
    """Every counter of a batch in one script call (not a HINCRBY each, a reply each for the worker to
    read); after SCRIPT FLUSH the script is loaded again and nothing is lost. Through the hub's own client
    (hub.store.redis.client), as the ingest step's tallies go."""
    client = client_from_url(redis_url, decode_responses=False)
    assert isinstance(client, HubRedis)
    client.flushdb()
    records = [standardised("crm", str(i), given_name="Ann", family_name="Lee", birth_date="1980-02-03",
                            emails=[{"address": f"ann{i}@gmail.com"}]) for i in range(10)]
    batch = tally(records, [("pos", "not_decodable")], NOW)
    assert len(batch["2026-01-01"]) > 8
    stored, memory = RedisTallyStore(client), MemoryTallyStore()
    sent: list[tuple] = []
    original = client.execute_command

    def counted(*args, **kwargs):
        sent.append(args)
        return original(*args, **kwargs)

    client.execute_command = counted
    stored.add(batch)
    memory.add(batch)
    assert [a[0] for a in sent] == ["EVALSHA"]
    client.script_flush()
    sent.clear()
    stored.add(batch)
    memory.add(batch)
    assert [a[0] for a in sent] == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]  # lost, loaded, counted once
    client.execute_command = original
    assert stored.read(days_back(NOW, 1)) == memory.read(days_back(NOW, 1))
    assert stored.read(days_back(NOW, 1))["2026-01-01"]["crm|*|records"] == 20
