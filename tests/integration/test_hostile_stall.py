"""Issue 20, finding 1: five authenticated requests must not stall the hub.

Five `POST /sources/crm/events` of ~59 KB each (2,000 e-mails and 150 phones
per event, one person) used to merge into a golden record of 8,000 e-mails
whose golden and audit values exceeded the broker's message limit; the
master retried forever and every later customer on that worker stopped.
Now an event carries at most `standardise.MAX_VALUES` of each (the overflow
is a quality issue), a golden record keeps at most `survivorship.max_values`,
and an output the broker would refuse is dead-lettered with its reason while
the stage moves on.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request

import orjson
import pytest
import redis
import yaml

from hub.config import DEFAULT_CONFIG, load_pipeline
from hub.standardise import MAX_VALUES
from hub.store.redis import RedisStore
from hub.testing.harness import Feeder, LocalHub, Watcher, open_goldens, topic_keyring

pytestmark = pytest.mark.integration

TOKEN = "crm-hostile-test-token"


def _config(tmp_path, survivorship: dict | None = None):
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["sources"][0]["tokens_sha256"] = [hashlib.sha256(TOKEN.encode()).hexdigest()]
    if survivorship:
        data["survivorship"] = {**data["survivorship"], **survivorship}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_pipeline(path)


def _post(worker, events: list[dict]) -> int:
    request = urllib.request.Request(f"{worker.base_url}/sources/crm/events", data=orjson.dumps(events),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _flood(i: int) -> dict:
    """One ~59 KB event: a single person with 2,000 e-mails and 150 phones."""
    return {"source_id": f"FLOOD-{i}", "event_time": f"2026-03-0{i + 1}T10:00:00Z",
            "given_name": "Mallory", "family_name": "Flood", "birth_date": "1980-01-01",
            "emails": [{"address": f"{i}x{n}@fl.io"} for n in range(2000)],
            "phones": [{"number": f"+4479111{i}{n:04d}"} for n in range(150)]}


_GIVEN = ("Amara", "Bjorn", "Chiara", "Dmitri", "Esther", "Farid", "Greta", "Hiroshi", "Ines", "Jonas",
          "Kalinda", "Lorenzo", "Maeve", "Nikhil", "Olwen", "Pavel", "Quentin", "Rosalind", "Sefa", "Tamsin")
_FAMILY = ("Okafor", "Lindqvist", "Ferraro", "Volkov", "Abrams", "Haddad", "Schultz", "Tanaka", "Duarte", "Becker",
           "Nguyen", "Moretti", "Gallagher", "Raman", "Pritchard", "Novak", "Delacroix", "Whitfield", "Mensah", "Carew")


def _customer(n: int) -> dict:
    return {"source_id": f"LATER-{n}", "event_time": "2026-03-10T10:00:00Z", "given_name": _GIVEN[n],
            "family_name": _FAMILY[n], "emails": [{"address": f"{_GIVEN[n]}.{_FAMILY[n]}@example.org".lower()}],
            "loyalty_id": f"LC{n * 7919 % 100000:05d}"}


def _run_attack(worker, watcher, pipeline, feeder=None):
    """The five flooding events (through the ingestion API, or written to
    raw.crm directly by `feeder`), then twenty ordinary customers."""
    for i in range(5):
        event = _flood(i)
        assert 55_000 < len(orjson.dumps(event)) < 65_536
        if feeder is None:
            assert _post(worker, [event]) == 202
        else:
            feeder.send("raw.crm", event["source_id"].encode(), orjson.dumps({"source": "crm", **event}))
    if feeder is not None:
        feeder.flush()
    assert _post(worker, [_customer(n) for n in range(20)]) == 202
    pos = pipeline.target("pos").output_topic

    def later_arrived(view) -> bool:
        held = [orjson.loads(v) for v in view.live(pos).values()]
        return {g.get("loyalty_id") for g in held} >= {f"LC{n * 7919 % 100000:05d}" for n in range(20)}

    return watcher.wait_until(later_arrived, timeout_s=120, quiet_s=1.0)


def test_flooded_events_are_capped_and_later_customers_flow(tmp_path):
    config_file, pipeline = _config(tmp_path)
    with LocalHub(pipeline, tmp_path / "hub") as hub:
        worker = hub.worker(config_file=config_file)
        golden, pos = pipeline.topics.golden, pipeline.target("pos").output_topic
        watcher = Watcher(hub.bootstrap, [golden, pos])
        try:
            view = _run_attack(worker, watcher, pipeline)
        finally:
            watcher.close()
        records = list(open_goldens(hub, view.live(golden), golden).values())
        flooded = [g for g in records if g["given_name"] == "Mallory"]
        assert len(flooded) == 1, "the five events are one person"
        assert len(flooded[0]["emails"]) <= pipeline.survivorship.max_values
        assert len(flooded[0]["phones"]) <= pipeline.survivorship.max_values
        assert worker.get("/health")[0] == 200
        # the overflow is reported as a quality issue of each flooded event
        assert worker.metric("hub_events_valid_total", source="crm") == 25
        # each flooded record's contribution, as the golden store keeps it (either engine)
        store = RedisStore.from_url(hub.redis_url, topic_keyring(hub))
        (state,) = asyncio.run(store.load([flooded[0]["golden_id"]])).values()
        contributions = [c for m, c in state.contributions.items() if m.startswith("crm:FLOOD-")]
        assert len(contributions) == 5
        for contribution in contributions:
            assert {"email.overflow", "phone.overflow"} <= set(contribution["quality"]["issues"])
            assert len(contribution["record"]["emails"]) == len(contribution["record"]["phones"]) == MAX_VALUES
        # bounded state: a handful of keys per record, not thousands (finding 3)
        keys = redis.Redis.from_url(hub.redis_url).dbsize()
        assert keys < 1500, keys


def test_an_output_the_broker_would_refuse_is_dead_lettered_not_retried(tmp_path):
    # a golden record may hold many values here, and the hub's largest record is
    # small: the flooded customer's golden and audit records outgrow it
    config_file, pipeline = _config(tmp_path, survivorship={"max_values": 1000})
    with LocalHub(pipeline, tmp_path / "hub") as hub:
        worker = hub.worker(config_file=config_file, env={"HUB_KAFKA__MAX_MESSAGE_BYTES": "12000"})
        dlqs = sorted({t for t in pipeline.all_topics() if t.startswith("dlq.")})
        watcher = Watcher(hub.bootstrap, [pipeline.target("pos").output_topic, *dlqs])
        try:
            # the worker's own limit also refuses such an event over HTTP (413): write them to the topic
            assert _post(worker, [_flood(0)]) == 413
            view = _run_attack(worker, watcher, pipeline, Feeder(hub.bootstrap))
        finally:
            watcher.close()
        quarantined = sum(n for (topic, reason), n in view.reasons.items()
                          if topic.startswith("dlq.") and reason == "output_too_large")
        assert quarantined >= 1, dict(view.reasons)
        assert worker.metric("hub_dlq_total", reason="output_too_large") == quarantined
        assert worker.get("/health")[0] == 200
