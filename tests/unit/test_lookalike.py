"""Look-alike e-mail addresses (a Cyrillic `а` in `yahoo`, a domain spelled
wholly in Cyrillic letters that look Latin) are flagged as a quality issue
and never count as identifier evidence: no e-mail feature, no e-mail
blocking key, so they cannot pull a record into someone else's golden
record. Genuine international addresses are not flagged."""

from __future__ import annotations

import pytest

from hub.lookalike import lookalike
from hub.matching.comparisons import DEFAULT_COMPARISONS, score
from hub.matching.features import blocking_values, features
from hub.standardise import standardise_and_score

REAL = "ward.sarah@yahoo.co.uk"
LOOKALIKE = "ward.sarah@y\u0430hoo.co.uk"  # Cyrillic а


@pytest.mark.parametrize("address", [
    LOOKALIKE,
    "w\u0430rd.sarah@yahoo.co.uk",             # in the local part
    "sarah@\u0430\u0440\u0440\u04cf\u0435.com",  # "apple" wholly in Cyrillic look-alikes (аррӏе)
    "\u0440\u0430\u0443\u0440\u0430l@example.com",  # раураl: mixed
    "sarah@g\u043e\u043egle.com",              # Cyrillic о twice
    "sarah@\u0261oogle.com",                   # LATIN SMALL LETTER SCRIPT G: single script, still a look-alike
])
def test_look_alike_addresses_are_flagged(address):
    assert lookalike(address)


@pytest.mark.parametrize("address", [
    REAL, "müller@bücher.de", "jose@exámple.com", "почта@пример.рф", "δοκιμή@παράδειγμα.δοκιμή",
    "用户@例子.广告", "たなか@例え.jp", "anna+shop@gmail.com", "françois.lefèvre@orange.fr",
])
def test_genuine_international_addresses_are_not(address):
    assert not lookalike(address)


def record(source_id: str, email: str, **fields) -> dict:
    event = {"source": "ecommerce", "source_id": source_id, "event_time": 1_790_000_000_000, "op": "upsert",
             "record_type": "person", "emails": [{"address": email}], **fields}
    return standardise_and_score(event)


def test_standardisation_keeps_the_address_and_flags_it():
    standardised, quality = record("E1", LOOKALIKE.upper().replace("\u0410", "\u0430"))
    assert [e["address"] for e in standardised["emails"]] == [LOOKALIKE]
    assert "email.lookalike" in quality["issues"]
    _, quality = record("E2", REAL)
    assert "email.lookalike" not in quality["issues"]


def test_a_look_alike_is_no_identifier_evidence():
    sarah, _ = record("C1", REAL, given_name="Sarah", family_name="Ward")
    attacker, _ = record("E9", LOOKALIKE, given_name="S", family_name="Ward")
    mine, theirs = features(sarah), features(attacker)
    assert theirs["em"] == [] and not [k for k in blocking_values(theirs) if k.startswith("e:")]
    _, evidence = score(DEFAULT_COMPARISONS, mine, theirs)
    assert ("email", "null", 0.0) in evidence
    # with the address it imitates, the e-mail is evidence (and strong)
    honest, _ = record("E8", REAL, given_name="S", family_name="Ward")
    _, evidence = score(DEFAULT_COMPARISONS, mine, features(honest))
    assert [(a, label) for a, label, weight in evidence if a == "email"] == [("email", "exact")]
