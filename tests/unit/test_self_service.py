"""Self-service links (signed, expiring, one customer each) and what a
customer's answers become: a self_service event and consent statements."""

from __future__ import annotations

import pytest

from hub import self_service
from hub.self_service import Link, LinkError
from hub.validation import validate_raw
from hub.config import QualityConfig

KEYS = [("k2", b"n" * 40), ("k1", b"o" * 40)]
NOW = 1_800_000_000_000


def test_a_link_opens_for_its_record_until_it_expires():
    token = self_service.sign(KEYS, "crm:C1", NOW + 60_000)
    link = self_service.verify(KEYS, token, NOW)
    assert link.member == "crm:C1" and link.expires_ms == NOW + 60_000 and link.link_id
    assert token.startswith("k2.")
    with pytest.raises(LinkError, match="expired"):
        self_service.verify(KEYS, token, NOW + 60_000)


def test_an_old_key_still_opens_a_link_and_an_unknown_one_does_not():
    old = self_service.sign(KEYS[1:], "crm:C1", NOW + 1000)
    assert self_service.verify(KEYS, old, NOW).member == "crm:C1"
    with pytest.raises(LinkError, match="not valid"):
        self_service.verify(KEYS[:1], old, NOW)


def test_a_link_cannot_be_turned_into_another_customers():
    mine = self_service.sign(KEYS, "crm:C1", NOW + 1000)
    theirs = self_service.sign(KEYS, "crm:C2", NOW + 1000)
    kid, _, mac = mine.split(".")
    forged = ".".join((kid, theirs.split(".")[1], mac))
    with pytest.raises(LinkError, match="not valid"):
        self_service.verify(KEYS, forged, NOW)
    for garbage in ("", "a.b", "k2.!!!.???", "k2." + "A" * 10 + "." + "B" * 43):
        with pytest.raises(LinkError):
            self_service.verify(KEYS, garbage, NOW)
    with pytest.raises(ValueError):
        self_service.sign(KEYS, "no-source-id", NOW)


def test_form_tokens_are_bound_to_their_link():
    one, two = Link("crm:C1", NOW, "aaa"), Link("crm:C1", NOW, "bbb")
    assert self_service.form_token(KEYS, one) != self_service.form_token(KEYS, two)


def test_keys():
    assert self_service.parse_keys("a1:" + "x" * 32 + ", b2:" + "y" * 40) == [("a1", b"x" * 32), ("b2", b"y" * 40)]
    for bad in ("", "nokey", "a1:short", "bad kid:" + "x" * 32):
        with pytest.raises(ValueError):
            self_service.parse_keys(bad)
    derived = self_service.keys_for(None, "pii")
    assert derived == self_service.keys_for(None, "pii") and derived != self_service.keys_for(None, "other")


GOLDEN = {"given_name": "Sam", "family_name": "Carter", "birth_date": None,
          "emails": [{"address": "old@gmail.com", "preferred": False}, {"address": "sam@gmail.com", "preferred": True}],
          "phones": [], "addresses": [{"line1": "4 Park Row", "city": "Leeds", "postcode": "LS1 5HD", "country": "GB",
                                       "preferred": True}],
          "consents": [{"subject": "crm:C1", "statement": {"purpose": "marketing", "channel": "email",
                                                            "status": "granted"}},
                       {"subject": "crm:C1", "statement": {"purpose": "analytics", "channel": "any",
                                                            "status": "denied"}}]}


def test_the_form_starts_from_the_preferred_values_and_the_consent_held():
    assert self_service.view(GOLDEN)["email"] == "sam@gmail.com"
    assert self_service.view(GOLDEN)["city"] == "Leeds" and self_service.view(GOLDEN)["phone"] == ""
    slots = [("marketing", "email"), ("marketing", "sms"), ("analytics", "any")]
    assert self_service.consent_state(GOLDEN, slots) == {("marketing", "email"): True, ("marketing", "sms"): False,
                                                         ("analytics", "any"): False}


def test_answers_become_a_valid_self_service_event_and_only_changed_consent():
    link = Link("crm:C1", NOW + 1000, "L1")
    answers = {**self_service.view(GOLDEN), "email": "sam@newmail.co.uk", "phone": " "}
    event = self_service.customer_event(link, answers, NOW)
    assert event["source"] == "self_service" and event["source_id"] == "crm:C1" and event["converted_from"] == "crm:C1"
    assert event["emails"] == [{"address": "sam@newmail.co.uk", "verified": True}] and event["phones"] == []
    import orjson

    checked = validate_raw(orjson.dumps(event), "self_service", QualityConfig(), NOW)
    assert isinstance(checked, dict), checked  # the ingest stage takes it as it is
    slots = [("marketing", "email"), ("analytics", "any")]
    held = self_service.consent_state(GOLDEN, slots)
    events = self_service.consent_events(link, held, {("marketing", "email"): False, ("analytics", "any"): False}, NOW)
    assert [(e["source"], e["source_id"], e["statement"]["purpose"], e["statement"]["status"]) for e in events] == [
        ("crm", "C1", "marketing", "revoked")]
    assert events[0]["statement"]["evidence"] == "self-service link L1"
