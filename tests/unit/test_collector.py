"""hub.collector: what a long-running hub process sets for Python's garbage collector at its start."""

import gc

import pytest

from hub.collector import DEFAULT_THRESHOLD, pace_collector
from hub.config import ConfigError, load_settings


@pytest.fixture
def collector_restored():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_start_is_frozen_and_the_collector_paced(collector_restored):
    made_at_start = [{"held": i} for i in range(1000)]
    assert pace_collector(DEFAULT_THRESHOLD) == DEFAULT_THRESHOLD == gc.get_threshold()
    assert gc.get_freeze_count() >= len(made_at_start)  # never scanned again


def test_an_empty_threshold_keeps_pythons_own(collector_restored):
    gc.set_threshold(700, 10, 10)
    assert pace_collector(()) == (700, 10, 10)
    assert gc.get_freeze_count() > 0


def test_cycles_made_after_the_start_are_still_collected(collector_restored):
    pace_collector((100, 10, 10))
    collected = []

    class Node:
        def __del__(self):
            collected.append(1)

    for _ in range(50):
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    gc.collect()
    assert len(collected) == 100


def test_the_thresholds_are_a_setting(monkeypatch):
    assert load_settings().gc_threshold == DEFAULT_THRESHOLD
    monkeypatch.setenv("HUB_GC_THRESHOLD", "[20000, 10]")
    assert load_settings().gc_threshold == (20000, 10)
    monkeypatch.setenv("HUB_GC_THRESHOLD", "[]")
    assert load_settings().gc_threshold == ()
    for bad in ("[0]", "[1, 2, 3, 4]", "[-5]"):
        monkeypatch.setenv("HUB_GC_THRESHOLD", bad)
        with pytest.raises(ConfigError, match="gc_threshold"):
            load_settings()


def test_no_collection_runs_while_a_pass_holds_its_containers_and_the_last_pass_turns_it_back_on():
    from hub.collector import collecting_after

    assert gc.isenabled()
    with collecting_after():
        assert not gc.isenabled()
        with collecting_after():  # a second pass overlapping the first (the timers beside the hot chain)
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with collecting_after():
            raise RuntimeError("a failed pass")
    assert gc.isenabled()
    gc.disable()  # turned off by someone else: a pass leaves it off
    try:
        with collecting_after():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_fused_pass_runs_its_steps_without_collection_and_its_cycles_are_collected_after():
    import asyncio

    from hub.engine import Chain, Step
    from hub.records import InMessage, OutMessage
    from hub.stages import StageOutput

    seen = []
    collected = []

    class Node:
        def __del__(self):
            collected.append(1)

    class Cyclic:
        async def process(self, batch):
            seen.append(gc.isenabled())
            for _ in range(10):
                a, b = Node(), Node()
                a.other, b.other = b, a
            await asyncio.sleep(0)
            seen.append(gc.isenabled())
            return StageOutput([OutMessage("out", m.key, m.value) for m in batch])

    chain = Chain([Step("master", Cyclic(), True)])
    output = asyncio.run(chain.process([InMessage("raw", 0, 0, b"k", b"v")]))
    assert len(output.messages) == 1
    assert seen == [False, False] and gc.isenabled()
    gc.collect()
    assert len(collected) == 20


def test_passes_in_several_threads_leave_the_collector_on_once_all_have_ended():
    import sys
    import threading

    from hub.collector import collecting_after

    start = threading.Barrier(8)

    def passes():
        start.wait()
        for _ in range(2000):
            with collecting_after():
                pass
    threads = [threading.Thread(target=passes) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two steps, so an unguarded count goes wrong
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert gc.isenabled()
