"""Unit tests for hub.consent (may this golden record go to this target?) and hub.projection."""

from __future__ import annotations

import copy

import orjson
import pytest

from hub.config import PurposeConfig, TargetConfig
from hub.consent import (
    ALLOWED,
    DENIED,
    EXPIRED,
    LEGAL_BASIS,
    NO_CONSENT,
    NOT_YET_EFFECTIVE,
    REVOKED,
    evaluate,
    next_change_ms,
)
from hub.projection import encode_json, fingerprint, project, target_key
from hub.survivorship import winning_consents

NOW = 1_700_000_000_000
HOUR = 3_600_000
PURPOSES = {p.name: p for p in (PurposeConfig(name="service", granted_by_default=True),
                                 PurposeConfig(name="marketing"), PurposeConfig(name="analytics"))}
SERVICE = TargetConfig(name="pos", purposes=["service"], fields=["given_name", "family_name", "loyalty_id"])
MARKETING = TargetConfig(name="marketing", purposes=["marketing"], legal_bases=["consent"], channels=["email"],
                         fields=["given_name", "emails"])
ANY_CHANNEL = TargetConfig(name="crm_marketing", purposes=["marketing"], fields=["given_name"])
BOTH = TargetConfig(name="both", purposes=["service", "marketing"], channels=["email", "sms"], fields=["emails"])


def st(purpose="marketing", status="granted", channel="any", t=NOW - HOUR, legal_basis="consent",
       effective_at=None, expires_at=None) -> dict:
    return {"purpose": purpose, "channel": channel, "status": status, "legal_basis": legal_basis,
            "effective_at": effective_at, "expires_at": expires_at, "collection_point": None,
            "notice_version": None, "evidence": None, "event_time": t}


def consents(*statements, subject="crm:1") -> list[dict]:
    return [{"subject": subject, "statement": s} for s in statements]


def verdict(target, *statements, now=NOW) -> str:
    return evaluate(consents(*statements), target, PURPOSES, now)


# ------------------------------------------------------------------ purposes


def test_granted_by_default_purpose_needs_no_statement():
    assert verdict(SERVICE) == ALLOWED


def test_granted_by_default_purpose_can_be_denied():
    assert verdict(SERVICE, st("service", "denied")) == DENIED
    assert verdict(SERVICE, st("service", "revoked")) == REVOKED


def test_marketing_needs_a_grant():
    assert verdict(MARKETING) == NO_CONSENT
    assert verdict(MARKETING, st("analytics")) == NO_CONSENT  # another purpose does not count
    assert verdict(MARKETING, st()) == ALLOWED


def test_every_purpose_of_the_target_must_be_allowed():
    assert verdict(BOTH) == NO_CONSENT
    assert verdict(BOTH, st(channel="sms")) == ALLOWED
    assert verdict(BOTH, st(channel="sms"), st("service", "denied")) == DENIED


@pytest.mark.parametrize("status, reason", [("denied", DENIED), ("revoked", REVOKED)])
def test_denied_and_revoked(status, reason):
    assert verdict(MARKETING, st(status=status)) == reason


def test_expired():
    assert verdict(MARKETING, st(expires_at=NOW - 1)) == EXPIRED
    assert verdict(MARKETING, st(expires_at=NOW)) == EXPIRED
    assert verdict(MARKETING, st(expires_at=NOW + 1)) == ALLOWED


def test_not_yet_effective():
    assert verdict(MARKETING, st(effective_at=NOW + 1)) == NOT_YET_EFFECTIVE
    assert verdict(MARKETING, st(effective_at=NOW)) == ALLOWED
    assert verdict(MARKETING, st(effective_at=NOW - HOUR, expires_at=NOW + HOUR)) == ALLOWED


def test_legal_basis_must_be_accepted_by_the_target():
    assert verdict(MARKETING, st(legal_basis="legitimate_interest")) == LEGAL_BASIS
    assert verdict(ANY_CHANNEL, st(legal_basis="legitimate_interest")) == ALLOWED
    assert verdict(ANY_CHANNEL, st(legal_basis="vital_interest")) == LEGAL_BASIS


def test_verdict_moves_with_the_clock():
    grant = st(effective_at=NOW + HOUR, expires_at=NOW + 2 * HOUR)
    assert verdict(MARKETING, grant, now=NOW) == NOT_YET_EFFECTIVE
    assert verdict(MARKETING, grant, now=NOW + HOUR) == ALLOWED
    assert verdict(MARKETING, grant, now=NOW + 2 * HOUR) == EXPIRED


# ------------------------------------------------------------------ channels


def test_target_channels_ignore_other_channels():
    assert verdict(MARKETING, st(channel="sms")) == NO_CONSENT
    assert verdict(MARKETING, st(channel="sms", status="denied")) == NO_CONSENT


def test_target_channels_accept_their_own_and_any():
    assert verdict(MARKETING, st(channel="email")) == ALLOWED
    assert verdict(MARKETING, st(channel="any")) == ALLOWED


def test_target_without_channels_accepts_any_channel():
    assert verdict(ANY_CHANNEL, st(channel="sms")) == ALLOWED
    assert verdict(ANY_CHANNEL, st(channel="post", status="denied")) == DENIED


def test_one_consented_channel_is_enough_for_a_multi_channel_target():
    assert verdict(BOTH, st(channel="email", status="denied", t=NOW - 10), st(channel="sms", t=NOW - 20)) == ALLOWED


# ------------------------------------------------------------------ the latest statement wins


def test_latest_statement_wins_through_winning_consents():
    grant, later_denial = st(t=NOW - 2 * HOUR), st(status="denied", t=NOW - HOUR)
    won = winning_consents({"crm:1": [later_denial], "pos:2": [grant]})
    assert evaluate(won, MARKETING, PURPOSES, NOW) == DENIED
    regrant = st(t=NOW - 60_000)
    won = winning_consents({"crm:1": [later_denial], "pos:2": [grant, regrant]})
    assert evaluate(won, MARKETING, PURPOSES, NOW) == ALLOWED


def test_latest_refusal_names_the_reason():
    assert verdict(MARKETING, st(channel="email", status="denied", t=NOW - 2 * HOUR),
                   st(channel="any", status="revoked", t=NOW - HOUR)) == REVOKED
    assert verdict(MARKETING, st(channel="email", status="revoked", t=NOW - HOUR),
                   st(channel="any", status="denied", t=NOW - 2 * HOUR)) == REVOKED


def test_later_channel_denial_overrides_an_earlier_any_grant():
    assert verdict(MARKETING, st(channel="any", t=NOW - 2 * HOUR),
                   st(channel="email", status="denied", t=NOW - HOUR)) == DENIED


def test_later_any_revocation_overrides_an_earlier_channel_grant():
    assert verdict(MARKETING, st(channel="email", t=NOW - 2 * HOUR),
                   st(channel="any", status="revoked", t=NOW - HOUR)) == REVOKED


@pytest.mark.parametrize("channel_first", [True, False])
def test_an_any_channel_and_a_channel_statement_of_equal_time_the_restrictive_wins(channel_first):
    for granted, refused in ((st(channel="any"), st(channel="email", status="denied")),
                             (st(channel="email"), st(channel="any", status="denied"))):
        statements = (refused, granted) if channel_first == (refused["channel"] == "email") else (granted, refused)
        assert verdict(MARKETING, *statements) == DENIED, statements


# ------------------------------------------------------------------ next_change_ms


def test_next_change_is_the_earliest_future_expiry():
    c = consents(st(expires_at=NOW + 3 * HOUR), st(purpose="analytics", expires_at=NOW + HOUR),
                 st(purpose="service", expires_at=NOW - HOUR))
    assert next_change_ms(c, NOW) == NOW + HOUR


def test_next_change_counts_a_future_start():
    c = consents(st(effective_at=NOW + 30 * 60_000, expires_at=NOW + 3 * HOUR))
    assert next_change_ms(c, NOW) == NOW + 30 * 60_000
    assert next_change_ms(c, NOW + 30 * 60_000) == NOW + 3 * HOUR


def test_next_change_none_when_nothing_pending():
    assert next_change_ms([], NOW) is None
    assert next_change_ms(consents(st(), st(expires_at=NOW - 1), st(expires_at=NOW)), NOW) is None


# ------------------------------------------------------------------ projection


def golden_record(**overrides) -> dict:
    g = {"golden_id": "G1", "version": 4, "record_type": "person", "given_name": "Ann", "family_name": "Smith",
         "birth_date": "1984-07-12", "national_id": "QQ123456C", "loyalty_id": "L77",
         "emails": [{"address": "ann@example.com", "verified": True, "preferred": True, "sources": ["crm:1"]}],
         "phones": [], "consents": consents(st()), "members": ["crm:1"], "updated_at": NOW}
    g.update(overrides)
    return g


def test_projection_holds_golden_id_and_configured_fields_only():
    g = golden_record()
    view = project(g, SERVICE)
    assert list(view) == ["golden_id", "given_name", "family_name", "loyalty_id"]
    assert view == {"golden_id": "G1", "given_name": "Ann", "family_name": "Smith", "loyalty_id": "L77"}
    assert "national_id" not in view and "birth_date" not in view and "consents" not in view


def test_projection_of_an_absent_field_is_none():
    view = project(golden_record(loyalty_id=None), SERVICE)
    assert view["loyalty_id"] is None
    g = golden_record()
    del g["loyalty_id"]
    assert project(g, SERVICE)["loyalty_id"] is None


def test_projection_does_not_mutate_the_golden_record():
    g = golden_record()
    before = copy.deepcopy(g)
    project(g, MARKETING)
    assert g == before


def test_target_key():
    assert target_key(golden_record(), SERVICE) == "G1"
    by_loyalty = TargetConfig(name="till", key="loyalty_id", fields=["given_name"])
    assert target_key(golden_record(), by_loyalty) == "L77"
    assert target_key(golden_record(loyalty_id=None), by_loyalty) is None


def _print(golden: dict, target: TargetConfig) -> str:
    return fingerprint(encode_json(project(golden, target)))


def test_fingerprint_ignores_changes_the_target_does_not_receive():
    base = _print(golden_record(), SERVICE)
    assert _print(golden_record(version=5, updated_at=NOW + 1, birth_date="1999-01-01",
                                emails=[], members=["crm:1", "pos:2"]), SERVICE) == base


def test_fingerprint_changes_when_a_received_field_changes():
    base = _print(golden_record(), SERVICE)
    assert _print(golden_record(given_name="Anne"), SERVICE) != base
    assert _print(golden_record(loyalty_id=None), SERVICE) != base
    assert _print(golden_record(golden_id="G2"), SERVICE) != base
    marketing = _print(golden_record(), MARKETING)
    changed = golden_record()
    changed["emails"] = [{**changed["emails"][0], "verified": False}]
    assert _print(changed, MARKETING) != marketing


def test_fingerprint_is_independent_of_key_order():
    g = golden_record()
    reordered = dict(reversed(list(g.items())))
    reordered["emails"] = [dict(reversed(list(e.items()))) for e in g["emails"]]
    assert encode_json(project(reordered, MARKETING)) == encode_json(project(g, MARKETING))
    assert _print(reordered, MARKETING) == _print(g, MARKETING)


def test_fingerprint_is_a_function_of_the_payload():
    payload = encode_json(project(golden_record(), SERVICE))
    assert orjson.loads(payload)["given_name"] == "Ann"
    assert fingerprint(payload) == fingerprint(bytes(payload))
    assert fingerprint(payload) != fingerprint(payload + b" ")
    assert len(fingerprint(payload)) == 24


def test_avro_target_schema_carries_every_golden_field():
    from hub.config import GOLDEN_FIELDS, SurvivorshipConfig
    from hub.projection import decode_avro, encode, target_schema
    from hub.standardise import standardise_and_score
    from hub.survivorship import build_golden, stamp

    record, quality = standardise_and_score({
        "source": "crm", "source_id": "1", "op": "upsert", "record_type": "person",
        "event_time": 1_790_000_000_000, "given_name": "Ann",
        "family_name": "Lee", "birth_date": "1990-01-02", "emails": [{"address": "ann.lee@gmail.com"}],
        "phones": [{"number": "07911 123456"}], "preferences": {"store": "Leeds"},
        "addresses": [{"line1": "1 High St", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}]})
    record.pop("consents")
    statement = {"purpose": "marketing", "channel": "email", "status": "granted", "legal_basis": "consent",
                 "effective_at": None, "expires_at": None, "collection_point": None, "notice_version": None,
                 "evidence": None, "event_time": 1_790_000_000_001}
    golden = stamp(build_golden("G1", {"crm:1": {"record": record, "quality": quality}}, {"crm:1": [statement]},
                                SurvivorshipConfig()), None, 1_790_000_000_002, "source_event", None)
    target = TargetConfig(name="everything", fields=[f for f in GOLDEN_FIELDS if f != "golden_id"], format="avro")
    view = project(golden, target)
    assert decode_avro(encode(view, target), target) == view
    schema, schema_id = target_schema(target)
    assert schema["name"] == "everything" and schema_id == target_schema(target)[1] and schema_id >= 0x40000000
    narrower = TargetConfig(name="everything", fields=["given_name"], format="avro")
    assert target_schema(narrower)[1] != schema_id  # other fields, other schema, other id
    with pytest.raises(ValueError):
        decode_avro(encode(project(golden, narrower), narrower), target)


def test_the_failing_purpose_is_named():
    from hub.consent import evaluate_purposes

    target = TargetConfig(name="t", purposes=["service", "marketing"], fields=["given_name"])
    purposes = {"service": PurposeConfig(name="service", granted_by_default=True),
                "marketing": PurposeConfig(name="marketing")}
    assert evaluate_purposes([], target, purposes, 0) == ("no_consent", "marketing")
    granted = [{"subject": "crm:1", "statement": {"purpose": "marketing", "channel": "any", "status": "granted",
                                                   "legal_basis": "consent", "effective_at": None,
                                                   "expires_at": None, "event_time": 1}}]
    assert evaluate_purposes(granted, target, purposes, 0) == ("allowed", "")


def test_freshness_halves_every_year():
    from hub.stages.ingest import freshness

    year = 365 * 86_400_000
    assert freshness(1_000, 1_000) == 1.0
    assert freshness(0, year) == pytest.approx(0.5)
    assert freshness(0, 2 * year) == pytest.approx(0.25)
    assert freshness(5_000, 1_000) == 1.0  # a clock slightly ahead is not "fresher than new"
