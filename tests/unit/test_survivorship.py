"""Unit tests for hub.survivorship: golden records from member contributions."""

from __future__ import annotations

import copy
import random

import orjson
import pytest

from hub.config import SurvivorshipConfig
from hub.schemas import codec
from hub.survivorship import SINGLE, build_golden, changed_attributes, content_equal, stamp, winning_consents

T0 = 1_700_000_000_000
RULES = SurvivorshipConfig(source_priority=["crm", "ecommerce", "contact_center", "pos"],
                           rules={"loyalty_id": "most_recent", "gender": "most_recent"})


def contribution(source: str, source_id: str, event_time: int, **fields) -> tuple[str, dict]:
    from hub.standardise import standardise_and_score

    raw = {"source": source, "source_id": source_id, "op": "upsert", "event_time": event_time,
           "record_type": "person"}
    raw.update(fields)
    record, quality = standardise_and_score(raw)
    record.pop("consents")
    return f"{source}:{source_id}", {"record": record, "quality": quality}


def contributions(*items) -> dict:
    return dict(items)


def household_of_jon() -> dict:
    return contributions(
        contribution("pos", "P-9", T0 + 5000, given_name="Jon", family_name="Smith", gender="m",
                     loyalty_id="LNEW", emails=[{"address": "jon@example.com", "verified": True}],
                     phones=[{"number": "07911 123456"}], preferences={"language": "fr", "store": "Leeds"}),
        contribution("crm", "C-1", T0, given_name="Jonathan", family_name="Smith", birth_date="1984-07-12",
                     gender="male", loyalty_id="LOLD",
                     emails=[{"address": "jonathan.smith@example.com"}, {"address": "jon@example.com"}],
                     addresses=[{"line1": "12 High Street", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}],
                     preferences={"language": "en"}),
        contribution("ecommerce", "E-3", T0 + 1000, given_name="Jonathan", middle_name="Paul", family_name="Smith",
                     emails=[{"address": "jonathan.smith@example.com"}], phones=[{"number": "+44 7911 123456"}]),
    )


def golden(contribs=None, consents=None, rules=RULES, golden_id="G1") -> dict:
    return build_golden(golden_id, household_of_jon() if contribs is None else contribs, consents or {}, rules)


# ------------------------------------------------------------------ single-valued rules


def test_source_priority_prefers_crm_over_a_newer_pos_record():
    g = golden()
    assert g["given_name"] == "Jonathan"
    assert g["lineage"]["given_name"]["source"] == "crm"
    assert g["lineage"]["given_name"]["rule"] == "source_priority"


def test_source_priority_falls_back_to_the_next_source_with_a_value():
    g = golden()
    assert g["middle_name"] == "Paul"  # only ecommerce has it
    assert g["lineage"]["middle_name"]["source"] == "ecommerce"


def test_unlisted_source_ranks_after_listed_ones():
    c = contributions(contribution("legacy", "X", T0 + 9999, given_name="Johnny"),
                      contribution("pos", "P", T0, given_name="Jon"))
    assert golden(c)["given_name"] == "Jon"


def test_source_priority_order_is_configurable():
    rules = SurvivorshipConfig(source_priority=["pos", "crm"])
    g = golden(rules=rules)
    assert g["given_name"] == "Jon" and g["lineage"]["given_name"]["source"] == "pos"


def test_most_recent_rule():
    g = golden()
    assert g["loyalty_id"] == "LNEW"
    assert g["lineage"]["loyalty_id"] == {"source": "pos", "source_id": "P-9", "event_time": T0 + 5000,
                                          "rule": "most_recent", "confirmed_at": T0 + 5000, "stale": False}
    everything_recent = SurvivorshipConfig(source_priority=["crm"], default_rule="most_recent")
    assert golden(rules=everything_recent)["given_name"] == "Jon"


def test_most_complete_rule():
    rules = SurvivorshipConfig(source_priority=["pos", "ecommerce", "crm"], default_rule="most_complete")
    g = golden(rules=rules)
    crm = household_of_jon()["crm:C-1"]
    assert max(c["quality"]["completeness"] for c in household_of_jon().values()) == crm["quality"]["completeness"]
    assert g["given_name"] == "Jonathan" and g["lineage"]["given_name"]["source"] == "crm"
    assert g["lineage"]["given_name"]["rule"] == "most_complete"


@pytest.mark.parametrize("rule", ["source_priority", "most_recent", "most_complete"])
def test_tie_break_is_the_member_key(rule):
    rules = SurvivorshipConfig(source_priority=["crm"], default_rule=rule)
    a = contribution("crm", "2", T0, given_name="Bea", family_name="Jones")
    b = contribution("crm", "10", T0, given_name="Beatrice", family_name="Jones")
    c = contribution("crm", "1", T0, given_name="Beatrix", family_name="Jones")
    for order in ([a, b, c], [c, b, a], [b, a, c], [b, c, a]):
        g = build_golden("G", dict(order), {}, rules)
        assert g["given_name"] == "Beatrix"  # "crm:1" < "crm:10" < "crm:2"
        assert g["lineage"]["given_name"]["source_id"] == "1"


def test_lineage_of_every_single_valued_attribute():
    contribs = household_of_jon()
    g = golden(contribs)
    present = {attr for attr in SINGLE if g[attr] is not None}
    assert set(g["lineage"]) == present
    assert {"given_name", "family_name", "birth_date", "gender", "loyalty_id", "middle_name", "record_type"} <= present
    for attr, lineage in g["lineage"].items():
        assert set(lineage) == {"source", "source_id", "event_time", "rule", "confirmed_at", "stale"}
        record = contribs[f"{lineage['source']}:{lineage['source_id']}"]["record"]
        assert record[attr] == g[attr]
        assert record["event_time"] == lineage["event_time"]
        assert lineage["rule"] == RULES.rules.get(attr, RULES.default_rule)


def test_attribute_nobody_has_is_none_without_lineage():
    g = golden()
    assert g["national_id"] is None and g["organisation_name"] is None
    assert "national_id" not in g["lineage"] and "organisation_name" not in g["lineage"]


# ------------------------------------------------------------------ multi-valued attributes


def test_emails_union_with_sources_and_one_preferred():
    g = golden()
    by_address = {e["address"]: e for e in g["emails"]}
    assert set(by_address) == {"jon@example.com", "jonathan.smith@example.com"}
    assert by_address["jon@example.com"]["sources"] == ["crm:C-1", "pos:P-9"]
    assert by_address["jonathan.smith@example.com"]["sources"] == ["crm:C-1", "ecommerce:E-3"]
    assert sum(e["preferred"] for e in g["emails"]) == 1
    # verified wins over an equally widespread unverified address
    assert by_address["jon@example.com"]["verified"] is True
    assert by_address["jon@example.com"]["preferred"] is True
    assert g["emails"][0]["address"] == "jon@example.com"


def test_verified_beats_more_sources():
    c = contributions(
        contribution("crm", "1", T0, emails=[{"address": "shared@example.com"}]),
        contribution("pos", "2", T0, emails=[{"address": "shared@example.com"}]),
        contribution("ecommerce", "3", T0 - 10, emails=[{"address": "own@example.com", "verified": True}]),
    )
    emails = golden(c)["emails"]
    assert [(e["address"], e["preferred"], e["verified"]) for e in emails] == [
        ("own@example.com", True, True), ("shared@example.com", False, False)]


def test_without_verification_more_sources_then_most_recent_is_preferred():
    c = contributions(
        contribution("crm", "1", T0, emails=[{"address": "old@example.com"}]),
        contribution("pos", "2", T0 + 10, emails=[{"address": "new@example.com"}]),
    )
    assert [e["address"] for e in golden(c)["emails"] if e["preferred"]] == ["new@example.com"]
    c["ecommerce:3"] = contribution("ecommerce", "3", T0 - 10, emails=[{"address": "old@example.com"}])[1]
    assert [e["address"] for e in golden(c)["emails"] if e["preferred"]] == ["old@example.com"]


def test_phones_and_addresses_union():
    g = golden()
    assert [p["number"] for p in g["phones"]] == ["+447911123456"]
    assert g["phones"][0]["sources"] == ["ecommerce:E-3", "pos:P-9"]
    assert g["phones"][0]["preferred"] is True
    assert len(g["addresses"]) == 1 and g["addresses"][0]["postcode"] == "LS1 4AB"
    assert g["addresses"][0]["sources"] == ["crm:C-1"] and g["addresses"][0]["preferred"] is True


def test_preferences_latest_per_key():
    assert golden()["preferences"] == {"language": "fr", "store": "Leeds"}


def test_members_quality_and_last_event_time():
    contribs = household_of_jon()
    g = golden(contribs)
    assert g["golden_id"] == "G1"
    assert g["members"] == ["crm:C-1", "ecommerce:E-3", "pos:P-9"]
    own = sum(c["quality"]["score"] for c in contribs.values()) / 3
    assert g["freshness"] == 1.0  # no staleness without a time to judge it by
    assert g["quality_score"] == pytest.approx(0.8 * own + 0.2, abs=1e-4)
    assert g["last_event_time"] == T0 + 5000


# ------------------------------------------------------------------ order independence


def test_build_golden_is_independent_of_insertion_order():
    contribs = household_of_jon()
    contribs.update([contribution("contact_center", "K-4", T0 + 1000, given_name="J", family_name="Smith",
                                  gender="male", emails=[{"address": "jon@example.com"}],
                                  preferences={"store": "York"})])
    consents = {"crm:C-1": [statement("marketing", "granted", T0)], "pos:P-9": [statement("marketing", "denied", T0)]}
    reference = orjson.dumps(build_golden("G1", contribs, consents, RULES))
    rng = random.Random(11)
    items = list(contribs.items())
    for _ in range(25):
        rng.shuffle(items)
        shuffled_consents = dict(reversed(list(consents.items())) if rng.random() < 0.5 else consents.items())
        assert orjson.dumps(build_golden("G1", dict(copy.deepcopy(items)), shuffled_consents, RULES)) == reference


def test_build_golden_does_not_mutate_contributions():
    contribs = household_of_jon()
    before = copy.deepcopy(contribs)
    golden(contribs)
    assert contribs == before


# ------------------------------------------------------------------ stamp


def test_stamp_first_version():
    content = golden()
    stamped = stamp(content, None, now_ms=T0 + 100, cause="source_event", produced_at=T0 + 7)
    assert stamped["version"] == 1
    assert stamped["updated_at"] == T0 + 100
    assert stamped["trigger_produced_at"] == T0 + 7
    assert stamped["cause"] == "source_event"
    assert "version" not in content  # content itself is left alone
    # a stamped golden record is a valid hub.GoldenRecord
    assert codec("hub.GoldenRecord").decode(codec("hub.GoldenRecord").encode(stamped)) == {**stamped, "sealed": None}


def test_stamp_keeps_the_previous_record_when_unchanged():
    previous = stamp(golden(), None, T0 + 100, "source_event", T0)
    again = stamp(golden(), previous, T0 + 999, "recompute", T0 + 900)
    assert again is previous
    assert again["version"] == 1 and again["updated_at"] == T0 + 100


def test_stamp_bumps_the_version_when_content_changes():
    previous = stamp(golden(), None, T0 + 100, "source_event", T0)
    frozen = copy.deepcopy(previous)
    contribs = household_of_jon()
    contribs["crm:C-1"]["record"]["birth_date"] = "1984-07-13"
    changed = stamp(golden(contribs), previous, T0 + 200, "source_event", T0 + 150)
    assert changed is not previous
    assert changed["version"] == 2
    assert changed["updated_at"] == T0 + 200 and changed["trigger_produced_at"] == T0 + 150
    assert changed["birth_date"] == "1984-07-13"
    assert previous == frozen
    assert changed_attributes(previous, changed) == ["birth_date"]
    assert not content_equal(previous, changed)
    assert content_equal(previous, {**previous, "version": 9, "updated_at": 1, "cause": "x"})


def test_changed_attributes_of_a_new_record():
    attrs = changed_attributes(None, golden())
    assert "golden_id" not in attrs and "given_name" in attrs and "version" not in attrs


# ------------------------------------------------------------------ consents


def statement(purpose: str, status: str, event_time: int, channel: str = "any", **extra) -> dict:
    st = {"purpose": purpose, "channel": channel, "status": status, "legal_basis": "consent",
          "effective_at": None, "expires_at": None, "collection_point": None, "notice_version": None,
          "evidence": None, "event_time": event_time}
    st.update(extra)
    return st


def test_winning_consents_latest_by_event_time_per_purpose_and_channel():
    later_denial = statement("marketing", "denied", T0 + 10, "email")
    older_grant = statement("marketing", "granted", T0, "email")
    sms_grant = statement("marketing", "granted", T0 - 99, "sms")
    analytics = statement("analytics", "granted", T0)
    won = winning_consents({"crm:1": [later_denial, analytics], "pos:2": [sms_grant, older_grant]})
    assert won == [
        {"subject": "crm:1", "statement": analytics},
        {"subject": "crm:1", "statement": later_denial},
        {"subject": "pos:2", "statement": sms_grant},
    ]
    # arrival order does not matter, only event_time
    assert winning_consents({"pos:2": [older_grant, sms_grant], "crm:1": [analytics, later_denial]}) == won


@pytest.mark.parametrize("granting, denying", [("crm:1", "pos:2"), ("pos:2", "crm:1")])
@pytest.mark.parametrize("status", ["denied", "revoked"])
def test_restrictive_statement_wins_on_equal_time(granting, denying, status):
    grant = statement("marketing", "granted", T0)
    restrict = statement("marketing", status, T0)
    for mapping in ({granting: [grant], denying: [restrict]}, {denying: [restrict], granting: [grant]}):
        [won] = winning_consents(mapping)
        assert won == {"subject": denying, "statement": restrict}


def test_same_member_restrictive_wins_on_equal_time():
    grant, deny = statement("marketing", "granted", T0), statement("marketing", "denied", T0)
    assert winning_consents({"crm:1": [grant, deny]})[0]["statement"] == deny
    assert winning_consents({"crm:1": [deny, grant]})[0]["statement"] == deny


def test_build_golden_carries_winning_consents():
    consents = {"crm:C-1": [statement("marketing", "granted", T0)], "pos:P-9": [statement("marketing", "revoked", T0 + 1)]}
    g = golden(consents=consents)
    assert g["consents"] == winning_consents(consents)
    assert g["consents"][0]["statement"]["status"] == "revoked"


# ------------------------------------------------------------------ partial updates (op=patch)


def _event(source_id: str, at: int, op: str = "upsert", **fields) -> tuple[dict, dict]:
    from hub.standardise import standardise_and_score

    raw = {"source": "crm", "source_id": source_id, "op": op, "event_time": at, "record_type": "person", **fields}
    record, quality = standardise_and_score(raw)
    record.pop("consents")
    return record, quality


def _fold(events) -> dict:
    from hub.survivorship import merge_contribution

    held = None
    for record, quality in events:
        held = merge_contribution(held, record, quality)
    return held


FULL = _event("C1", T0, given_name="Anna", family_name="Smith", birth_date="1980-02-03",
              emails=[{"address": "anna@old.example"}], phones=[{"number": "07911 123456"}])
PATCH = _event("C1", T0 + 10, op="patch", emails=[{"address": "anna@new.example"}])
LATER_FULL = _event("C1", T0 + 20, given_name="Anna", family_name="Jones")


def test_a_patch_changes_only_what_it_carries():
    merged = _fold([FULL, PATCH])
    record = merged["record"]
    assert [e["address"] for e in record["emails"]] == ["anna@new.example"]
    assert record["given_name"] == "Anna" and record["birth_date"] == "1980-02-03"
    assert record["phones"][0]["number"] == "+447911123456"
    assert record["event_time"] == T0 + 10 and record["op"] == "upsert"
    assert merged["times"]["emails"] == T0 + 10 and merged["times"]["given_name"] == T0
    # completeness is that of the merged record, not of the sparse patch
    assert merged["quality"]["completeness"] == FULL[1]["completeness"] > PATCH[1]["completeness"]


def test_an_upsert_states_everything_a_missing_value_included():
    record = _fold([FULL, PATCH, LATER_FULL])["record"]
    assert record["family_name"] == "Jones" and record["emails"] == [] and record["birth_date"] is None


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (1, 2, 0), (0, 2, 1), (2, 0, 1)])
def test_contributions_do_not_depend_on_arrival_order(order):
    events = [FULL, PATCH, _event("C1", T0 + 5, op="patch", phones=[{"number": "07911 123457"}])]
    reference = _fold(events)
    assert _fold([events[i] for i in order]) == reference
    assert reference["record"]["phones"][0]["number"] == "+447911123457"


def test_an_older_upsert_arriving_late_undoes_nothing_newer():
    assert _fold([FULL, LATER_FULL])["record"] == _fold([LATER_FULL, FULL])["record"]


def test_lineage_time_is_when_the_attribute_was_stated():
    contribs = {"crm:C1": _fold([FULL, PATCH])}
    g = build_golden("G1", contribs, {}, RULES)
    assert g["lineage"]["given_name"]["event_time"] == T0
    assert [e["confirmed_at"] for e in g["emails"]] == [T0 + 10]


# ------------------------------------------------------------------ most frequent, data decay


def test_most_frequent_rule():
    rules = SurvivorshipConfig(source_priority=["crm"], default_rule="most_frequent")
    c = contributions(contribution("crm", "1", T0, given_name="Jonathan"),
                      contribution("pos", "2", T0, given_name="Jon"),
                      contribution("ecommerce", "3", T0, given_name="Jon"))
    g = golden(c, rules=rules)
    assert g["given_name"] == "Jon" and g["lineage"]["given_name"]["rule"] == "most_frequent"
    assert g["lineage"]["given_name"]["source"] == "ecommerce"  # of the two holders, ecommerce ranks first


def test_values_no_source_confirmed_for_long_are_stale():
    from hub.survivorship import next_stale_ms

    day = 86_400_000
    rules = SurvivorshipConfig(source_priority=["crm", "pos"], stale_after_days=365)
    c = contributions(contribution("crm", "1", T0 - 400 * day, given_name="Jonathan", family_name="Smith",
                                   emails=[{"address": "old@example.com"}]),
                      contribution("pos", "2", T0 - 10 * day, family_name="Smith",
                                   emails=[{"address": "new@example.com"}]))
    g = build_golden("G1", c, {}, rules, now_ms=T0)
    assert g["lineage"]["given_name"]["stale"] is True  # only crm said it, 400 days ago
    assert g["lineage"]["family_name"]["stale"] is False  # crm's value, but pos confirmed it 10 days ago
    assert g["lineage"]["family_name"]["confirmed_at"] == T0 - 10 * day
    assert {e["address"]: e["stale"] for e in g["emails"]} == {"old@example.com": True, "new@example.com": False}
    assert g["stale_attributes"] == ["emails", "given_name"]
    assert g["freshness"] == pytest.approx(2 / 4)  # given, family, two e-mails (record_type does not decay)
    fresh = build_golden("G1", c, {}, rules, now_ms=T0 - 300 * day)
    assert fresh["stale_attributes"] == [] and fresh["freshness"] == 1.0
    assert g["quality_score"] < fresh["quality_score"]
    # the next value to go stale: pos's family name and e-mail, 365 days after they were stated
    assert next_stale_ms(g, 365) == T0 - 10 * day + 365 * day + 1
    assert next_stale_ms(g, None) is None


# ------------------------------------------------------------------ ties and boundaries


def test_events_of_equal_time_give_one_contribution_whatever_their_order():
    anna = _event("C1", T0 + 30, given_name="Anna", family_name="Smith")
    anne = _event("C1", T0 + 30, given_name="Anne", family_name="Smith")
    one, other = _fold([FULL, anna, anne]), _fold([FULL, anne, anna])
    assert one == other
    assert one["record"]["given_name"] == "Anne"  # on equal times the larger value, in either order


def test_a_patch_never_changes_a_records_type():
    organisation = _event("C1", T0, record_type="organisation", organisation_name="Acme Ltd")
    patch = _event("C1", T0 + 10, op="patch", organisation_name="Acme Limited")  # decoded with the default type
    assert patch[0]["record_type"] == "person"
    merged = _fold([organisation, patch])["record"]
    assert merged["record_type"] == "organisation" and merged["organisation_name"] == "Acme Limited"


def test_a_value_goes_stale_exactly_when_next_stale_ms_says():
    from hub.survivorship import next_stale_ms

    day = 86_400_000
    rules = SurvivorshipConfig(source_priority=["crm"], stale_after_days=365)
    c = contributions(contribution("crm", "1", T0, given_name="Jonathan", emails=[{"address": "jon@example.com"}],
                                   phones=[{"number": "07911 123456"}]))
    due = next_stale_ms(build_golden("G1", c, {}, rules, now_ms=T0), 365)
    assert due == T0 + 365 * day + 1
    before, at = (build_golden("G1", c, {}, rules, now_ms=now) for now in (due - 1, due))
    assert before["stale_attributes"] == [] and before["lineage"]["given_name"]["stale"] is False
    assert [e["stale"] for e in before["emails"] + before["phones"]] == [False, False]
    assert at["stale_attributes"] == ["emails", "given_name", "phones"]
    assert [e["stale"] for e in at["emails"] + at["phones"]] == [True, True]
