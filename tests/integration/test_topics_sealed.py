"""Generated customers (hub/testing/generator.py) through a worker with the
default settings (HUB_SEAL_TOPICS on): every value on the internal topics
customer.canonical, customer.linked, customer.golden and audit is scanned for the names, e-mails, phones and
birth dates of the customers, as tests/integration/test_pii_at_rest.py scans
Redis: none may appear in clear. The targets still receive their slices in
clear, and the workers' keyring opens the internal topics' values again."""

from __future__ import annotations

import re
import time

import orjson
import pytest

from hub.connectors.kafka import read_topic
from hub.crypto import Keyring, SealError
from hub.demo import encode_event
from hub.schemas import AUDIT, CANONICAL, GOLDEN, LINKED, codec
from hub.testing.generator import generate
from hub.testing.harness import (Watcher, open_audits, open_canonicals, open_goldens, open_linked_record,
                                 wait_caught_up, worker_input_topics)
from hub.topic_seal import SEALED_FIELD, open_value
from test_pii_at_rest import MIN_LEN, _needles

pytestmark = pytest.mark.integration


def _held(golden: dict) -> set[str]:
    """The personal values a golden record holds, as the hub standardised them."""
    found = {golden[a] for a in ("given_name", "family_name", "birth_date", "national_id", "organisation_name") if
             golden.get(a)}
    found |= {e["address"] for e in golden["emails"]} | {p["number"] for p in golden["phones"]}
    found |= {a["line1"] for a in golden["addresses"] if a.get("line1")}
    return {n for n in found if len(n) >= MIN_LEN}


def test_internal_topics_hold_no_personal_data_in_clear(local_hub, feeder, pipeline):
    """With the staged engine, which writes every internal topic (the fused one writes customer.golden and
    audit only, sealed by the same code: tests/unit/test_engine.py compares the two engines' outputs)."""
    topics = pipeline.topics
    worker = local_hub.worker(env={"HUB_ENGINE": "staged"})
    events = generate(80, seed=23, start_ms=int(time.time() * 1000) - 86_400_000, invalid_share=0.0)
    raw = [e for e in events if e.topic.startswith("raw.")]
    for ev in events:
        feeder.send(ev.topic, ev.key, ev.raw if ev.raw is not None else encode_event(ev.topic, ev.value))
    feeder.flush()
    targets = [t.output_topic for t in pipeline.targets]
    watcher = Watcher(local_hub.bootstrap, [topics.canonical, topics.golden, topics.audit, *targets],
                      keep_values={topics.golden, topics.audit, *targets})
    watcher.wait_until(lambda v: v.counts[topics.canonical] >= len(raw), timeout_s=120, quiet_s=2.0)
    wait_caught_up(local_hub.bootstrap, "hub", worker_input_topics(pipeline, "staged"))
    view = watcher.read_to_end()
    watcher.close()

    # every value ever written (not only the latest per key): raw bytes, as anyone allowed on the topic reads them
    golden_values = [(k, v) for k, v in read_topic(local_hub.bootstrap, topics.golden) if v is not None]
    audit_values = [(k, v) for k, v in read_topic(local_hub.bootstrap, topics.audit) if v is not None]
    assert len(golden_values) > 60 and len(audit_values) > 60

    goldens = open_goldens(local_hub, dict(golden_values), topics.golden)
    held = set().union(*(_held(g) for g in goldens.values()))
    needles = _needles(events) | held  # as fed (and folded, digits only), and as standardised
    assert len(held) > 150 and len(needles) > 300
    golden_dump = b"\n".join(v for _, v in golden_values)
    audit_dump = b"\n".join(v for _, v in audit_values)
    assert not [n for n in needles if n.encode() in golden_dump], f"personal data in clear on {topics.golden}"
    assert not [n for n in needles if n.encode() in audit_dump], f"personal data in clear on {topics.audit}"
    canonical_values = [(k, v) for k, v in read_topic(local_hub.bootstrap, topics.canonical) if v is not None]
    linked_values = [(k, v) for k, v in read_topic(local_hub.bootstrap, topics.linked) if v is not None]
    assert len(canonical_values) >= len(raw) and len(linked_values) > 60
    canonical_dump = b"\n".join(v for _, v in canonical_values)
    linked_dump = b"\n".join(v for _, v in linked_values)
    assert not [n for n in needles if n.encode() in canonical_dump], f"personal data in clear on {topics.canonical}"
    assert not [n for n in needles if n.encode() in linked_dump], f"personal data in clear on {topics.linked}"
    # a canonical record's personal fields are sealed; its ids stay readable, in a linked record too
    plain_canonical = [codec(CANONICAL).decode(v) for _, v in canonical_values]
    assert all(c["record"]["given_name"] is None and c["record"]["emails"] == [] and c["record"]["source_id"]
               for c in plain_canonical)
    assert all(c[SEALED_FIELD] is not None for c in plain_canonical if c["record"]["op"] != "delete")
    carried = [c["canonical"] for c in (codec(LINKED).decode(v) for _, v in linked_values) if c["canonical"]]
    assert len(carried) > 60 and all(c["record"]["source_id"] for c in carried)
    assert all(c[SEALED_FIELD] is not None for c in carried if c["record"]["op"] != "delete")
    # each golden record's personal fields are in its sealed payload, the rest readable without a key
    plain = [codec(GOLDEN).decode(v) for _, v in golden_values]
    assert all(g["given_name"] is None and g["family_name"] is None and g["emails"] == [] and g["phones"] == []
               for g in plain)
    assert sum(1 for g in plain if g[SEALED_FIELD] is not None) > 60
    assert all(g["members"] and g["golden_id"] for g in plain)
    # nor the phone numbers' digits as the hub standardised them (E.164)
    digits = {re.sub(r"\D", "", p["number"]) for g in goldens.values() for p in g["phones"]}
    digits = {d for d in digits if len(d) >= 9}
    assert len(digits) > 20 and not [d for d in digits if d.encode() in golden_dump + audit_dump]

    # the targets receive their slices, in clear: each is the target's projection, for it to read
    target_dump = b"\n".join(v for t in targets for v in view.live(t).values())
    assert len(view.live("mastered.pos")) > 40
    assert sum(1 for n in held if n.encode() in target_dump) > 50

    # the workers' keyring gives the values back: golden records and the changes the audit trail explains
    assert sum(1 for g in goldens.values() if g["given_name"] and g["emails"]) > 40
    audits = open_audits(local_hub, audit_values, topics.audit)
    created = [a for a in audits if a["kind"] == "golden_created"]
    assert len(created) > 40
    assert all(a["changes"] for a in created)
    opened_values = orjson.dumps([c for a in created for c in a["changes"]])
    assert sum(1 for n in held if n.encode() in opened_values) > len(held) // 2
    # and canonical records, as written and as a linked record carries them
    canonicals = open_canonicals(local_hub, dict(canonical_values), topics.canonical)
    assert sum(1 for c in canonicals.values() if c["record"]["given_name"] and c["record"]["emails"]) > 40
    opened_canonical = orjson.dumps([c["record"] for c in canonicals.values()])
    assert sum(1 for n in held if n.encode() in opened_canonical) > len(held) // 2
    opened_links = [open_linked_record(local_hub, v, topics.canonical) for _, v in linked_values]
    assert sum(1 for x in opened_links if x["canonical"] and x["canonical"]["record"]["given_name"]) > 40
    # and another key does not
    key, value = golden_values[0]
    with pytest.raises(SealError):
        open_value(Keyring.from_settings(None, "another-key-of-32-characters-xxxx"), GOLDEN, value, topics.golden, key)
    # nor does a value moved under another key
    with pytest.raises(SealError):
        open_value(Keyring.from_settings(None, local_hub.pii_key), GOLDEN, value, topics.golden, b"G-elsewhere")
    key, value = canonical_values[0]
    with pytest.raises(SealError):
        open_value(Keyring.from_settings(None, local_hub.pii_key), CANONICAL, value, topics.canonical, b"crm:other")
    # decision events carry no personal value: left unsealed, readable as before
    decisions = [codec(AUDIT).decode(v) for _, v in audit_values]
    assert any(d["kind"] == "match_decision" and d[SEALED_FIELD] is None for d in decisions)
    assert worker.get("/health")[0] == 200
