"""Sealing the personal fields of internal topic values (hub.topic_seal):
round trips, the bytes hold no personal value in clear, a record opens only
where it was written and with a key of the keyring, and key rotation."""

from __future__ import annotations

import base64
import copy

import orjson
import pytest

from hub.crypto import Keyring, SealError
from hub.schemas import AUDIT, CANONICAL, GOLDEN, LINKED, codec
from hub.topic_seal import PERSONAL, key_ids, open_linked, open_record, open_value, seal, seal_value
from test_schemas import audit, canonical, golden, linked

K1 = ("k1", b"\x01" * 32)
K2 = ("k2", b"\x02" * 32)
TOPIC = "customer.golden"


def personal_strings(value) -> set[str]:
    """Every string value (of 4+ characters) inside a value."""
    found: set[str] = set()
    if isinstance(value, str):
        if len(value) >= 4:
            found.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            found |= personal_strings(v)
    elif isinstance(value, list):
        for v in value:
            found |= personal_strings(v)
    return found


def audit_with_changes() -> dict:
    event = audit()
    event["changes"] = [{"attribute": "given_name", "before": '"Ann"', "after": '"Anna"'},
                        {"attribute": "emails", "before": None,
                         "after": orjson.dumps([{"address": "anna.smith@example.com"}]).decode()}]
    return event


@pytest.mark.parametrize("schema,record,topic", [(GOLDEN, golden, TOPIC), (AUDIT, audit_with_changes, "audit")])
def test_round_trip(schema, record, topic):
    keyring = Keyring([K1])
    original = record()
    kept = copy.deepcopy(original)
    sealed = seal(keyring, schema, original, topic, original.get("golden_id"))
    assert original == kept  # not mutated
    assert sealed["sealed"] is not None
    assert open_record(keyring, schema, sealed, topic, original.get("golden_id").encode()) == original
    # through the wire format, as a reader of the topic gets it
    value = codec(schema).encode(sealed)
    assert open_value(keyring, schema, value, topic, original["golden_id"]) == original
    assert seal_value(keyring, schema, codec(schema).encode(original), topic, original["golden_id"]) != value  # nonce


@pytest.mark.parametrize("schema,record,topic", [(GOLDEN, golden, TOPIC), (AUDIT, audit_with_changes, "audit")])
def test_no_personal_value_in_clear_in_the_sealed_bytes(schema, record, topic):
    original = record()
    needles = set().union(*(personal_strings(original[name]) for name in PERSONAL[schema]))
    if schema == AUDIT:  # the names of changed attributes are not personal (changed_attributes has them)
        needles -= {c["attribute"] for c in original["changes"]}
    else:  # <source>:<source_id> ids stay in clear in members, as in the raw topics' keys
        needles -= set(original["members"])
    plain = codec(schema).encode(original)
    needles = {n for n in needles if n.encode() in plain}  # enum symbols travel as numbers
    assert len(needles) >= (10 if schema == GOLDEN else 3)  # the check can fail
    sealed = codec(schema).encode(seal(Keyring([K1]), schema, original, topic, original["golden_id"]))
    assert [n for n in needles if n.encode() in sealed] == []
    decoded = codec(schema).decode(sealed)
    # what stays readable without the key: ids, versions, lineage, which attributes changed
    assert decoded["golden_id"] == original["golden_id"]
    if schema == GOLDEN:
        assert (decoded["given_name"], decoded["emails"], decoded["survey"]) == (None, [], None)
        assert decoded["members"] == original["members"] and decoded["lineage"] == original["lineage"]
    else:
        assert decoded["changes"] == [] and decoded["changed_attributes"] == original["changed_attributes"]


def test_a_record_without_personal_values_is_left_alone():
    event = audit()
    event["changes"] = []
    assert seal(Keyring([K1]), AUDIT, event, "audit", event["golden_id"]) == {**event, "sealed": None}


def test_a_record_opens_only_where_it_was_written():
    keyring = Keyring([K1])
    record = golden()
    sealed = seal(keyring, GOLDEN, record, TOPIC, record["golden_id"])
    with pytest.raises(SealError, match="does not open here"):
        open_record(keyring, GOLDEN, sealed, TOPIC, "G-another")  # copied under another key
    with pytest.raises(SealError, match="does not open here"):
        open_record(keyring, GOLDEN, sealed, "customer.golden.mirror", record["golden_id"])
    tampered = {**sealed, "sealed": sealed["sealed"][:-1] + bytes([sealed["sealed"][-1] ^ 1])}
    with pytest.raises(SealError):
        open_record(keyring, GOLDEN, tampered, TOPIC, record["golden_id"])


def test_wrong_key():
    record = golden()
    sealed = seal(Keyring([K1]), GOLDEN, record, TOPIC, record["golden_id"])
    with pytest.raises(SealError, match="not in the keyring"):
        open_record(Keyring([K2]), GOLDEN, sealed, TOPIC, record["golden_id"])
    same_id_other_key = Keyring([("k1", b"\x03" * 32)])
    with pytest.raises(SealError, match="does not open here"):
        open_record(same_id_other_key, GOLDEN, sealed, TOPIC, record["golden_id"])


def test_rotation():
    record = golden()
    old = codec(GOLDEN).encode(seal(Keyring([K1]), GOLDEN, record, TOPIC, record["golden_id"]))
    rotated = Keyring([K2, K1])  # the new key first, the old one kept
    new = seal_value(rotated, GOLDEN, codec(GOLDEN).encode(record), TOPIC, record["golden_id"])
    assert open_value(rotated, GOLDEN, old, TOPIC, record["golden_id"]) == record
    assert open_value(rotated, GOLDEN, new, TOPIC, record["golden_id"]) == record
    assert key_ids(GOLDEN, [old, new, new, None, codec(GOLDEN).encode(record)]) == {"k1": 1, "k2": 2, None: 1}
    with pytest.raises(SealError):
        open_value(Keyring([K2]), GOLDEN, old, TOPIC, record["golden_id"])  # dropped too early


def test_same_keyring_as_redis():
    """HUB_PII_KEYS (or the key derived from HUB_PII_KEY) seals topics as it seals Redis values."""
    spec = f"k9:{base64.b64encode(b'9' * 32).decode()}"
    keyring = Keyring.from_settings(spec, "ignored")
    record = golden()
    sealed = seal(keyring, GOLDEN, record, TOPIC, record["golden_id"])
    assert keyring.kid_of(sealed["sealed"]) == "k9"
    derived = Keyring.from_settings(None, "dev-key")
    assert open_record(derived, GOLDEN, seal(derived, GOLDEN, record, TOPIC, "G"), TOPIC, "G") == record


def test_a_canonical_record_seals_the_personal_fields_of_its_record():
    keyring = Keyring([K1])
    original = canonical()
    kept = copy.deepcopy(original)
    topic, member = "customer.canonical", "crm:C-1001"
    sealed = seal(keyring, CANONICAL, original, topic, member)
    assert original == kept and sealed["sealed"] is not None
    record = sealed["record"]
    # the ids and what the stages route on stay readable; the personal fields are left at their defaults
    assert (record["source"], record["source_id"], record["op"], record["event_time"]) == \
        ("crm", "C-1001", "upsert", original["record"]["event_time"])
    assert (record["given_name"], record["emails"], record["consents"], record["invalid_values"]) == (None, [], [], {})
    assert sealed["quality"] == original["quality"] and sealed["origin"] == original["origin"]
    value = codec(CANONICAL).encode(sealed)
    needles = {n for n in personal_strings({k: original["record"][k] for k in PERSONAL[CANONICAL]})
               if n.encode() in codec(CANONICAL).encode(original)}
    needles -= {"marketing", "email"}  # a consent's purpose and channel: also ids and attribute names in clear
    assert len(needles) >= 8 and [n for n in needles if n.encode() in value] == []
    assert open_value(keyring, CANONICAL, value, topic, member.encode()) == original
    # nested in a linked record as the match stage forwards it: opened for the canonical topic and member
    linked_value = codec(LINKED).encode({**linked(), "canonical": sealed})
    assert [n for n in needles if n.encode() in linked_value] == []
    assert open_linked(keyring, codec(LINKED).decode(linked_value), topic)["canonical"] == original
    assert key_ids(LINKED, [linked_value, codec(LINKED).encode(linked())]) == {"k1": 1, None: 1}
    with pytest.raises(SealError):  # another topic, another member
        open_record(keyring, CANONICAL, sealed, "customer.linked", member)
    with pytest.raises(SealError):
        open_record(keyring, CANONICAL, sealed, topic, "crm:C-1002")
    with pytest.raises(SealError):  # no keyring
        open_linked(None, codec(LINKED).decode(linked_value), topic)
    # a deletion carries nothing personal: left as it is
    deleted = {**original, "record": {**original["record"], **{k: v for k, v in sealed["record"].items()
                                                               if k in PERSONAL[CANONICAL]}, "op": "delete"}}
    assert seal(keyring, CANONICAL, deleted, topic, member)["sealed"] is None
