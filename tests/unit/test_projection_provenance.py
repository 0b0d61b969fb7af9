"""Data minimisation reaches inside values: a target without `members` or
`lineage` in its fields does not learn which source records a value came
from (emails[].sources, phones[].sources, addresses[].sources,
consents[].subject, survey.source), in JSON or in its Avro schema; a target
that has them keeps them."""

from __future__ import annotations

from hub.config import GOLDEN_FIELDS, SurvivorshipConfig, TargetConfig
from hub.projection import decode_avro, encode, encode_json, project, target_schema
from hub.standardise import standardise_and_score
from hub.survivorship import build_golden, stamp

T0 = 1_790_000_000_000
MEMBER_IDS = (b"crm:C-1001", b"pos:P-9", b"C-1001", b"P-9")


def golden() -> dict:
    contributions = {}
    for source, source_id in (("crm", "C-1001"), ("pos", "P-9")):
        record, quality = standardise_and_score({
            "source": source, "source_id": source_id, "op": "upsert", "record_type": "person", "event_time": T0,
            "given_name": "Ann", "family_name": "Lee", "emails": [{"address": "ann.lee@gmail.com"}],
            "phones": [{"number": "07911 123456"}],
            "addresses": [{"line1": "1 High St", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}]})
        contributions[f"{source}:{source_id}"] = {"record": record, "quality": quality}
    statement = {"purpose": "service", "channel": "any", "status": "granted", "legal_basis": "contract",
                 "effective_at": None, "expires_at": None, "collection_point": None, "notice_version": None,
                 "evidence": None, "event_time": T0 + 1}
    answer = {"survey_id": "nps-2026-q1", "score": 9, "responded_at": T0 + 2, "channel": "email"}
    built = build_golden("G1", contributions, {"crm:C-1001": [statement]}, SurvivorshipConfig(),
                         {"crm:C-1001": [answer]})
    return stamp(built, None, T0 + 3, "source_event", None)


NESTED = ["emails", "phones", "addresses", "consents", "survey"]


def test_a_target_without_provenance_gets_no_member_ids_inside_values():
    pos = TargetConfig(name="pos", fields=["given_name", *NESTED])
    record = golden()
    assert record["emails"][0]["sources"] == ["crm:C-1001", "pos:P-9"]  # the golden record keeps them
    view = project(record, pos)
    payload = encode_json(view)
    assert not [m for m in MEMBER_IDS if m in payload], payload
    assert view["emails"][0]["address"] == "ann.lee@gmail.com" and view["emails"][0]["preferred"]
    assert view["survey"]["last_score"] == 9 and view["consents"][0]["statement"]["purpose"] == "service"
    # its Avro schema has no place for them either, and encodes what it gets
    avro = encode(view, TargetConfig(name="pos", fields=["given_name", *NESTED], format="avro"))
    assert not [m for m in MEMBER_IDS if m in avro]
    schema, _ = target_schema(TargetConfig(name="pos", fields=["given_name", *NESTED], format="avro"))
    assert b"sources" not in encode_json(schema) and b'"subject"' not in encode_json(schema)
    assert decode_avro(avro, TargetConfig(name="pos", fields=["given_name", *NESTED], format="avro")) == view


def test_a_target_that_sees_members_or_lineage_keeps_nested_provenance():
    record = golden()
    for extra in ("members", "lineage"):
        target = TargetConfig(name="steward", fields=["given_name", extra, *NESTED], format="avro")
        view = project(record, target)
        assert view["emails"][0]["sources"] == ["crm:C-1001", "pos:P-9"]
        assert view["consents"][0]["subject"] == "crm:C-1001" and view["survey"]["source"] == "crm:C-1001"
        assert decode_avro(encode(view, target), target) == view
    everything = TargetConfig(name="all", fields=[f for f in GOLDEN_FIELDS if f != "golden_id"])
    assert project(record, everything) == {k: record.get(k) for k in GOLDEN_FIELDS}


def test_minimising_does_not_touch_the_golden_record():
    record = golden()
    before = encode_json(record)
    project(record, TargetConfig(name="pos", fields=NESTED))
    assert encode_json(record) == before
