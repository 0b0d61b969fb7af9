"""The worker's in-process caches are bounded: every lru_cache in the hub has
a size unless its keys come from a closed set (configuration, schema names),
and all of them together stay within a memory budget (hub.caches)."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import hub
from hub import caches, standardise

# Keyed by configuration or by the schemas shipped with the hub, never by event
# values: as many entries as there are targets, URLs or schemas.
CLOSED_KEYS = {
    "hub.schemas.registry_ids", "hub.schemas._all_parsed", "hub.schemas._name_of_id", "hub.schemas.codec",
    "hub.schemas.expanded", "hub.schemas.named_types",
    "hub.projection._target_schema", "hub.connectors.serdes.standalone_schema",
    "hub.connectors.serdes.registry_avro", "hub.connectors.schema_registry.registry_client",
}
BYTES_PER_ENTRY = 340  # measured with tracemalloc on the soak stream (hub.caches)
BUDGET_MB = 40


def hub_caches() -> dict[str, functools._lru_cache_wrapper]:
    found = {}
    root = Path(hub.__file__).parent
    for path in sorted(root.rglob("*.py")):  # hub.matching and hub.connectors have no __init__.py
        name = ".".join(("hub", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        if name == "hub.__main__":  # runs the command line
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, functools._lru_cache_wrapper) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_cache_keyed_by_event_values_has_a_size_within_the_budget():
    found = hub_caches()
    assert "hub.standardise._validate_email" in found and "hub.matching.features.fold" in found
    unbounded = sorted(name for name, cache in found.items()
                       if cache.cache_info().maxsize is None and name not in CLOSED_KEYS)
    assert unbounded == []
    entries = sum(cache.cache_info().maxsize for name, cache in found.items() if name not in CLOSED_KEYS)
    assert entries * BYTES_PER_ENTRY <= BUDGET_MB * 2**20


def test_a_full_cache_keeps_its_size():
    cache = standardise._validate_email
    cache.cache_clear()
    for i in range(caches.CUSTOMER_VALUES + 500):
        standardise.standardise({"source": "crm", "source_id": str(i), "op": "upsert", "event_time": 1_700_000_000_000,
                                 "record_type": "person", "emails": [{"address": f"person{i}@example.com"}]})
    assert cache.cache_info().currsize == caches.CUSTOMER_VALUES


def test_memory_report_shows_rss_allocators_and_cache_fills(tmp_path):
    from hub.testing.memdebug import MemoryReporter

    reporter = MemoryReporter(tmp_path / "memory.txt")
    reporter.report()
    reporter.report()
    text = (tmp_path / "memory.txt").read_text()
    assert text.count("== t=") == 2 and "rss=" in text and "pymalloc:" in text
    assert "-- object types that grew most" in text and "-- lru caches" in text
