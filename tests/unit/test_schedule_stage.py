"""The schedule stage (hub.stages.schedule): what time alone changes, from the
store's due lists, in memory (hub.store.memory_store)."""

from __future__ import annotations

from hub.config import load_pipeline
from hub.ports import GoldenState
from hub.schemas import AUDIT, LINKED, codec
from hub.stages.schedule import DAY_MS, ScheduleStage
from hub.store.memory_store import MemoryStore
from test_memory_index import run

NOW = 1_780_000_000_000


def _pipeline(**changes):
    pipeline = load_pipeline(None)
    for section, values in changes.items():
        pipeline = pipeline.model_copy(update={section: getattr(pipeline, section).model_copy(update=values)})
    return pipeline


def _linked(output) -> list[tuple[str, str, str]]:
    return [(m.key.decode(), *(lambda r: (r["kind"], r["cause"]))(codec(LINKED).decode(m.value)))
            for m in output.messages]


def test_consent_and_decay_due_become_recompute_requests_once():
    store = MemoryStore()
    run(store.schedule({"G1": NOW - 5, "G2": NOW + 60_000}, "consent"))
    run(store.schedule({"G3": NOW - 1}, "decay"))
    stage = ScheduleStage(_pipeline(survivorship={"stale_after_days": 30}), store)
    assert _linked(run(stage.consent(NOW))) == [("G1", "recompute", "consent_schedule")]
    assert run(stage.consent(NOW)).messages == []  # taken: due again only if the recompute's output is lost
    assert _linked(run(stage.decay(NOW))) == [("G3", "recompute", "data_decay")]
    assert run(ScheduleStage(_pipeline(survivorship={"stale_after_days": None}), store).decay(NOW)).messages == []


def _with_inactive(store: MemoryStore) -> None:
    old = {"golden_id": "G1", "last_event_time": NOW - 400 * DAY_MS}
    recent = {"golden_id": "G2", "last_event_time": NOW - DAY_MS}
    run(store.save([GoldenState("G1", {"crm:1": {}}, old), GoldenState("G2", {"crm:2": {}}, recent)], []))


def test_retention_flags_each_inactive_customer_once_its_audit_event_is_delivered():
    store = MemoryStore()
    _with_inactive(store)
    stage = ScheduleStage(_pipeline(retention={"inactive_days": 365, "action": "flag"}), store)
    output = run(stage.retention(NOW))
    audits = [codec(AUDIT).decode(m.value) for m in output.messages]
    assert [(a["golden_id"], a["kind"]) for a in audits] == [("G1", "retention_flagged")]
    assert len(run(stage.retention(NOW)).messages) == 1  # not delivered yet: not marked
    run(output.after_delivery())
    assert run(stage.retention(NOW)).messages == []
    assert run(ScheduleStage(_pipeline(), store).retention(NOW)).messages == []  # no policy


def test_retention_erases_when_the_policy_says_so():
    store = MemoryStore()
    _with_inactive(store)
    stage = ScheduleStage(_pipeline(retention={"inactive_days": 365, "action": "erase"}), store)
    assert _linked(run(stage.retention(NOW))) == [("G1", "erase", "retention policy")]
