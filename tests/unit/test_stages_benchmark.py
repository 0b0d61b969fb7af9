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
