"""benchmarks/stages.py --engine fused: the worker's hot path in process, on the in-memory store."""

import asyncio
import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "stages.py"
_spec = importlib.util.spec_from_file_location("stages_benchmark", _PATH)
stages_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stages_benchmark)


def test_the_fused_pass_is_measured_over_every_raw_event_and_split_by_step():
    result = asyncio.run(stages_benchmark.run_fused(events=300, batch=50, memory=True))
    assert result["engine"] == "fused" and result["store"] == "memory"
    assert result["raw_events"] > 50  # several batches
    assert result["fused_us_per_raw_event"] > 0 and result["fused_cpu_us_per_raw_event"] > 0
    shares = [result[f"{step}_share"] for step in ("ingest", "match", "master", "syndicate")]
    assert all(share > 0 for share in shares) and abs(sum(shares) - 1.0) < 0.01


def test_a_preloaded_index_is_searched_and_redis_reports_its_cpu(redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    result = asyncio.run(stages_benchmark.run_fused(events=300, batch=150, redis_url=redis_url, preload=500))
    assert result["preloaded_customers"] == 500 and result["store"] == "redis"
    assert result["redis_cpu_us_per_raw_event"] > 0
    # the preloaded customers are in the index beside the run's own records
    held = redis.Redis.from_url(redis_url).scan_iter(match="{hub:}mem:*", count=1000)
    assert sum(1 for _ in held) > 500 + result["raw_events"] // 3
    # each batch reads and writes the index, the golden records and the targets' state: a few dozen round
    # trips, not one per record (150 per batch), once the server holds the scripts (the first run loaded them,
    # a call at a time)
    redis.Redis.from_url(redis_url).flushdb()  # the data goes (sealed with that run's key), the scripts stay
    again = asyncio.run(stages_benchmark.run_fused(events=300, batch=150, redis_url=redis_url))
    assert 5 <= again["redis_round_trips_per_batch"] < 150


def test_pair_scoring_captures_the_pairs_the_fused_pass_scores(redis_url):
    """benchmarks/pair_scoring.py reads the fused pass's own candidate pairs with both readers."""
    import redis

    from hub.matching.comparisons import compiled, read_reference

    path = _PATH.parent / "pair_scoring.py"
    spec = importlib.util.spec_from_file_location("pair_scoring_benchmark", path)
    pair_scoring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pair_scoring)
    redis.Redis.from_url(redis_url).flushdb()
    pairs = pair_scoring.capture(events=400, preload=300, redis_url=redis_url, limit=2000)
    assert len(pairs) > 20  # duplicates and the preloaded customers' look-alikes met as candidates
    assert any(asked for *_, asked in pairs)  # read with the index's term frequencies
    for comparisons, a, b, asked in pairs:
        frequencies = (lambda f, v, asked=asked: asked.get((f, v))) if asked is not None else None
        assert compiled(comparisons).read(a, b, "", frequencies)[0] == read_reference(comparisons, a, b, "",
                                                                                       frequencies)[0]


def test_throughputs_breakdown_reads_the_workers_metrics_over_the_steady_run():
    """benchmarks/throughput.py's inside-the-worker figures, from two scrapes of a real registry's text."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    path = _PATH.parent / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput_benchmark", path)
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    registry = CollectorRegistry()
    records = Histogram("hub_batch_records", "", ["stage"], buckets=(1, 10, 100), registry=registry)
    delivery = Histogram("hub_delivery_seconds", "", ["stage"], registry=registry)
    end_to_end = Histogram("hub_end_to_end_seconds", "", ["target"], buckets=(0.05, 0.1, 0.2), registry=registry)
    Counter("hub_golden_lease_waits", "", registry=registry)
    wait_ends = Counter("hub_golden_lease_wait_ends", "", ["outcome"], registry=registry)

    def scrape() -> dict:
        total = {}
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("hub_") and " " in line:
                head, _, value = line.rpartition(" ")
                name, _, labels = head.partition("{")
                total[(name, labels)] = total.get((name, labels), 0.0) + float(value)
        return total
    end_to_end.labels("pos").observe(5.0)  # before the steady run: not counted
    before = scrape()
    wait_ends.labels("released").inc(3)
    wait_ends.labels("timed_out").inc()
    for size in (10, 30):
        records.labels("hot").observe(size)
        delivery.labels("hot").observe(0.02)
    for seconds, target in [(0.04, "pos")] * 60 + [(0.08, "crm")] * 39 + [(0.15, "pos")]:
        end_to_end.labels(target).observe(seconds)
    inside = throughput._breakdown(before, scrape())
    assert inside["passes"] == {"hot": 2} and inside["records_per_pass"] == {"hot": 20.0}
    assert inside["delivery_ms_per_pass"] == {"hot": 20.0} and inside["golden_lease_waits"] == 0
    assert inside["golden_lease_waits_released"] == 3
    # 99 of the 100 at or under 100 ms, over both targets' buckets
    assert inside["hub_end_to_end_p99_le_ms"] == 100.0
    assert inside["hub_end_to_end_mean_ms"] == round((60 * 40 + 39 * 80 + 150) / 100, 1)


def test_a_pass_reads_and_writes_in_a_few_round_trips(redis_url):
    """The round trips of a pass of 20 records (a worker's passes at half rate hold 20-30): the match step
    reads the tombstones with the blocks, the constraints and tallies with the candidates; the master
    step takes its leases and loads the golden records with its first read, and reads the syndication
    state the syndicate step needs with its save (14.3 before those were joined, 8.3 after)."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    asyncio.run(stages_benchmark.run_fused(events=300, batch=20, redis_url=redis_url))  # loads the scripts
    redis.Redis.from_url(redis_url).flushdb()
    again = asyncio.run(stages_benchmark.run_fused(events=300, batch=20, redis_url=redis_url))
    assert again["redis_round_trips_per_batch"] <= 9


def test_redis_commands_name_every_script_the_pass_runs(redis_url):
    """Scripts held for the next round trip go as EVAL with their source, which the slow log shows joined
    with the call's arguments and cut at 128 bytes: they are named by that source, as EVALSHA calls are by
    their digest, so no script's time hides under a fragment of Lua."""
    import redis

    from hub.store.redis import scripts

    redis.Redis.from_url(redis_url).flushdb()
    result = asyncio.run(stages_benchmark.run_fused(events=300, batch=150, redis_url=redis_url, redis_commands=True))
    spent = result["redis_us_per_raw_event_by_command"]
    known = {name for name, text in vars(scripts).items() if name.isupper() and isinstance(text, str)}
    known.add("quality ADD_COUNTS")
    ran = [name.removeprefix("script ") for name in spent if name.startswith("script ")]
    assert {"LINK_MANY", "BLOCKS", "TALLIES", "MEMBERS"} <= set(ran)  # TALLIES and MEMBERS are held as EVAL
    assert all(set(name.split("|")) <= known for name in ran), ran
