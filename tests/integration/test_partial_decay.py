"""Partial updates and data decay on the real broker and Redis: a patch
changes only what it carries; a value no source confirms for the configured
time is flagged stale by the hub itself, with no new event, and the record's
quality score drops."""

from __future__ import annotations

import time

import pytest
import yaml

from hub.config import PipelineConfig, load_pipeline
from hub.connectors.kafka import read_topic
from hub.schemas import CUSTOMER_EVENT, codec
from hub.testing.harness import Feeder, LocalHub, Watcher, open_audits, open_goldens

pytestmark = pytest.mark.integration

STALE_AFTER_S = 8.0


def test_patch_merges_and_unconfirmed_values_go_stale(tmp_path):
    data = load_pipeline(None).model_dump(mode="json")
    data["survivorship"].update(stale_after_days=STALE_AFTER_S / 86_400, decay_check_interval_s=0.5)
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    pipeline = PipelineConfig.model_validate(data)
    with LocalHub(pipeline, tmp_path) as hub:
        hub.worker(config_file=path)
        watcher = Watcher(hub.bootstrap, [pipeline.topics.golden])
        feeder = Feeder(hub.bootstrap)

        def anna() -> dict | None:
            found = [g for g in open_goldens(hub, watcher.view.live(pipeline.topics.golden)).values()
                     if g["members"] == ["crm:C1"]]
            return found[0] if found else None

        # first the worker joins its group and masters something: from then on, times are short
        feeder.send("raw.pos", b"pos:W", codec(CUSTOMER_EVENT).encode(
            {"source": "pos", "source_id": "W", "event_time": int(time.time() * 1000), "given_name": "Warm"}))
        feeder.flush()
        watcher.wait_until(lambda v: len(v.live(pipeline.topics.golden)) == 1, quiet_s=0.1)

        now = int(time.time() * 1000)
        full = {"source": "crm", "source_id": "C1", "event_time": now, "given_name": "Anna", "family_name": "Smith",
                "birth_date": "1980-02-03", "emails": [{"address": "anna@example.com"}],
                "phones": [{"number": "07911 123456"}], "loyalty_id": "L000000042"}
        # a phone change only, stated "later" so it stays fresh through the test
        patch = {"source": "crm", "source_id": "C1", "op": "patch", "event_time": now + 60_000,
                 "phones": [{"number": "07911 123457"}]}
        feeder.send("raw.crm", b"crm:C1", codec(CUSTOMER_EVENT).encode(full))
        feeder.flush()
        watcher.wait_until(lambda v: anna() is not None, quiet_s=0.1)
        first = anna()
        assert first["stale_attributes"] == [] and first["freshness"] == 1.0

        feeder.send("raw.crm", b"crm:C1", codec(CUSTOMER_EVENT).encode(patch))
        feeder.flush()
        watcher.wait_until(lambda v: anna()["version"] == 2, quiet_s=0.1)
        patched = anna()
        assert patched["cause"] == "source_event"
        assert [p["number"] for p in patched["phones"]] == ["+447911123457"]
        assert patched["given_name"] == "Anna" and patched["birth_date"] == "1980-02-03"
        assert [e["address"] for e in patched["emails"]] == ["anna@example.com"]
        assert patched["loyalty_id"] == "L000000042"
        assert patched["lineage"]["given_name"]["event_time"] == now
        assert patched["phones"][0]["confirmed_at"] == now + 60_000
        assert patched["stale_attributes"] == []

        # nobody confirms the rest: the hub flags it stale by itself
        watcher.wait_until(lambda v: anna()["stale_attributes"], timeout_s=STALE_AFTER_S + 20, quiet_s=0.2)
        decayed = anna()
        assert decayed["stale_attributes"] == ["birth_date", "emails", "family_name", "given_name", "loyalty_id"]
        assert decayed["lineage"]["given_name"]["stale"] and not decayed["phones"][0]["stale"]
        assert decayed["freshness"] == pytest.approx(1 / 6, abs=1e-3)
        assert decayed["quality_score"] < patched["quality_score"]
        assert decayed["cause"] == "data_decay" and decayed["version"] == 3
        audits = open_audits(hub, read_topic(hub.bootstrap, pipeline.topics.audit))
        decay = [a for a in audits if a["cause"] == "data_decay" and a["golden_id"] == decayed["golden_id"]]
        assert len(decay) == 1 and "stale_attributes" in decay[0]["changed_attributes"]
        watcher.close()
