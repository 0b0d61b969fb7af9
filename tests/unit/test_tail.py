"""`hub tail`'s lines: one per record, readable whatever the record is."""

from __future__ import annotations

from hub.records import ERROR_EXCEPTION, ERROR_REASON, REASON_HEADER
from hub.crypto import Keyring
from hub.schemas import GOLDEN, codec
from hub.tail import describe, readable
from hub.topic_seal import seal


def test_json_is_shown_as_it_is_and_avro_decoded():
    assert readable(b'{"b": 1,  "a": [2]}') == '{"b":1,"a":[2]}'
    golden = {"golden_id": "G1", "version": 3, "record_type": "person", "given_name": "Ada", "middle_name": None,
              "family_name": "Lovelace", "birth_date": None, "gender": None, "national_id": None,
              "loyalty_id": None, "organisation_name": None, "account_ref": None, "lifecycle": None,
              "account_golden_id": None, "household_id": None, "emails": [], "phones": [], "addresses": [],
              "preferences": {}, "consents": [], "lineage": {}, "survey": None, "members": ["crm:1"],
              "quality_score": 0.5, "freshness": 1.0, "stale_attributes": [], "updated_at": 1,
              "last_event_time": 1, "trigger_produced_at": None, "cause": "source_event"}
    shown = readable(codec(GOLDEN).encode(golden))
    assert '"given_name":"Ada"' in shown and '"version":3' in shown
    # sealed on customer.golden (hub.topic_seal): opened with the workers' keyring, shown sealed without it
    keyring = Keyring.from_settings(None, "tail-test-key-of-32-characters-x")
    sealed = codec(GOLDEN).encode(seal(keyring, GOLDEN, golden, "customer.golden", "G1"))
    assert '"given_name":"Ada"' in readable(sealed, keyring, "customer.golden", b"G1")
    assert '"given_name":null' in readable(sealed) and '"version":3' in readable(sealed)
    assert "bytes sealed with key k0" in readable(sealed)
    assert '"given_name":null' in readable(sealed, Keyring.from_settings(None, "another-key"), "customer.golden", b"G1")
    line = describe("customer.golden", 0, 5, b"G1", sealed, [], keyring)
    assert line.startswith("customer.golden[0]@5 G1 ") and '"family_name":"Lovelace"' in line
    assert readable(b"\x00\x00\x01\x86\xa0xyz") == "<8 bytes, Avro schema id 100000>"
    assert readable(b"\xff\xfe") == "<2 bytes>"


def test_a_withdrawal_and_a_dead_letter_say_why():
    assert describe("mastered.pos", 2, 41, b"G1", None, [(REASON_HEADER, b"consent_revoked")]) == \
        "mastered.pos[2]@41 G1 (withdrawn: consent_revoked)"
    line = describe("dlq.crm", 0, 7, None, b"C2,\"Bob", [(ERROR_REASON, b"not_decodable"),
                                                        (ERROR_EXCEPTION, b"line 3: not a CSV row")])
    assert line == "dlq.crm[0]@7 - <7 bytes>  (dead letter: not_decodable: line 3: not a CSV row)"


def test_a_canonical_record_and_the_linked_record_carrying_it_open_with_the_keyring():
    from test_schemas import canonical, linked

    from hub.schemas import CANONICAL, LINKED

    keyring = Keyring.from_settings(None, "tail-test-key-of-32-characters-x")
    sealed = seal(keyring, CANONICAL, canonical(), "customer.canonical", "crm:C-1001")
    value = codec(CANONICAL).encode(sealed)
    assert '"given_name":"Ann"' in readable(value, keyring, "customer.canonical", b"crm:C-1001")
    shown = readable(value)
    assert '"given_name":null' in shown and '"source_id":"C-1001"' in shown and "bytes sealed with key k0" in shown
    carried = codec(LINKED).encode({**linked(), "canonical": sealed})
    line = describe("customer.linked", 1, 7, b"G0123456789abcdef0123", carried, [], keyring)
    assert '"given_name":"Ann"' in line and '"sealed":null' in line
    shown = readable(carried, None, "customer.linked", b"G0123456789abcdef0123")
    assert '"given_name":null' in shown and "bytes sealed with key k0" in shown
    assert '"given_name":null' in readable(carried, keyring, "customer.linked", b"G1", canonical_topic="elsewhere")
