"""Personal data on the hub's internal topics, sealed with the keyring that
seals it in Redis (hub.crypto).

A golden record on `customer.golden`, an audit event on `audit` and a
canonical record on `customer.canonical` (also nested, as the match stage
forwards it, in a linked record on `customer.linked`: opened with the
canonical topic and its member key) keep their shape: the fields that hold
personal data (`PERSONAL`; a canonical record's are those of its `record`,
`NESTED`) are moved into one AES-256-GCM payload in the record's `sealed`
field (those fields as JSON, by name, so a payload stays readable as the
schema evolves; JSON costs a fifteenth of fastavro's CPU here, and makes a
golden record's value about twice as large:
docs/topic-sealing-and-config-audit.md) and left at their schema defaults
(null, empty list, empty map); everything else (ids, versions, times,
lineage, members, quality, which attributes changed) stays readable by
anyone allowed on the topic. The payload's associated data is
`<topic>|<key>|sealed`, so a value copied under another key or onto another
topic does not open. Opening needs a keyring holding the key that sealed it
(its id travels in the payload): the first key of HUB_PII_KEYS seals, every
key opens, as in Redis. Target topics are not sealed: each is the target's
projection, for the target to read.

Pure: dicts in, dicts out (and `seal_value`/`open_value` for Avro wire-format
bytes). A record whose personal fields are all empty is left as it is
(`sealed` null): most audit events carry none.

Kafka records cannot be rewritten, so `hub rekey` does not re-seal topic
values: a record keeps the key that sealed it until retention (audit) or
compaction (a newer value of the same golden record) removes it; keep a key
in HUB_PII_KEYS while `key_ids` still finds it on a topic
(`hub rekey --topics` reports them).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from hub.crypto import Keyring, SealError, key_id
from hub.records import member_key
from hub.schemas import AUDIT, CANONICAL, GOLDEN, LINKED, codec, expanded

SEALED_FIELD = "sealed"

# the fields of each internal record type that hold personal data; ids (golden id, <source>:<source_id>
# members and subjects, household and account ids) stay in clear as they do in Redis keys
PERSONAL: dict[str, tuple[str, ...]] = {
    GOLDEN: ("given_name", "middle_name", "family_name", "birth_date", "gender", "national_id", "loyalty_id",
             "organisation_name", "emails", "phones", "addresses", "preferences", "consents", "survey"),
    AUDIT: ("changes",),  # each changed attribute's value before and after (changed_attributes: names only)
    # the fields of its `record` (NESTED); source, source_id, op, event_time, record_type, account_ref,
    # lifecycle, converted_from stay in clear (ids and what the match and master stages route on)
    CANONICAL: ("given_name", "middle_name", "family_name", "birth_date", "gender", "national_id", "loyalty_id",
                "organisation_name", "emails", "phones", "addresses", "preferences", "consents", "invalid_values"),
}
# a record type whose personal fields are those of one of its record fields (the payload stays top-level)
NESTED: dict[str, str] = {CANONICAL: "record"}


def _fields(schema_name: str) -> dict[str, dict]:
    """The fields of the record holding `schema_name`'s personal fields."""
    fields = {f["name"]: f for f in expanded(schema_name)["fields"]}
    inner = NESTED.get(schema_name)
    if inner is not None:
        fields = {f["name"]: f for f in fields[inner]["type"]["fields"]}
    return fields


def _blanks(schema_name: str) -> dict:
    """What a sealed record holds in place of each personal field: its schema default."""
    fields = _fields(schema_name)
    blanks = {}
    for name in PERSONAL[schema_name]:
        if "default" not in fields[name]:
            raise ValueError(f"{schema_name}.{name} has no default: it cannot be left out of a sealed record")
        blanks[name] = fields[name]["default"]
    if SEALED_FIELD not in {f["name"] for f in expanded(schema_name)["fields"]}:
        raise ValueError(f"{schema_name} has no {SEALED_FIELD!r} field")
    return blanks


_BLANKS = {name: _blanks(name) for name in PERSONAL}
_FIELDS = {name: set(_fields(name)) for name in PERSONAL}


def associated_data(topic: str, key: bytes | str | None) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    return topic.encode() + b"|" + (key or b"") + b"|" + SEALED_FIELD.encode()


def seal(keyring: Keyring, schema_name: str, record: dict, topic: str, key: bytes | str | None) -> dict:
    """A copy of `record` (hub.GoldenRecord, hub.AuditEvent, or hub.CanonicalCustomer: the personal fields
    of its `record`) with its personal fields sealed."""
    blanks = _BLANKS[schema_name]
    inner = NESTED.get(schema_name)
    holder = record[inner] if inner else record
    personal = {name: holder.get(name, blank) for name, blank in blanks.items()}
    if personal == blanks:
        return {**record, SEALED_FIELD: None}
    sealed = keyring.seal(orjson.dumps(personal), associated_data(topic, key))
    if inner:
        return {**record, inner: {**holder, **blanks}, SEALED_FIELD: sealed}
    return {**record, **blanks, SEALED_FIELD: sealed}


def open_record(keyring: Keyring, schema_name: str, record: dict, topic: str, key: bytes | str | None) -> dict:
    """`record` with its personal fields back (as it was before `seal`); unsealed records as they are.
    Raises SealError when the keyring lacks the key, or the value was moved to another topic or key."""
    sealed = record.get(SEALED_FIELD)
    if sealed is None:
        return record
    personal = orjson.loads(keyring.open(sealed, associated_data(topic, key)))
    # by name: a payload sealed under an older schema opens under a newer one (a field it lacks keeps its default)
    fields = _FIELDS[schema_name]
    opened = {k: v for k, v in personal.items() if k in fields}
    inner = NESTED.get(schema_name)
    if inner:
        return {**record, inner: {**record[inner], **opened}, SEALED_FIELD: None}
    return {**record, **opened, SEALED_FIELD: None}


def member_of(canonical: dict) -> str:
    """The key a hub.CanonicalCustomer is written under on customer.canonical (and sealed with)."""
    return member_key(canonical["record"]["source"], canonical["record"]["source_id"])


def open_linked(keyring: Keyring | None, linked: dict, canonical_topic: str) -> dict:
    """A hub.LinkedRecord with the canonical record it carries opened: the match stage forwards it as the
    ingest stage sealed it, for `canonical_topic` and its member key. Unsealed ones as they are."""
    canonical = linked.get("canonical")
    if not canonical or canonical.get(SEALED_FIELD) is None:
        return linked
    if keyring is None:
        raise SealError("a sealed canonical record in a linked record and no keyring to open it")
    return {**linked, "canonical": open_record(keyring, CANONICAL, canonical, canonical_topic, member_of(canonical))}


def seal_value(keyring: Keyring, schema_name: str, value: bytes, topic: str, key: bytes | str | None) -> bytes:
    """The same, for a value in the Avro wire format (decode, seal, encode)."""
    record_codec = codec(schema_name)
    return record_codec.encode(seal(keyring, schema_name, record_codec.decode(value), topic, key))


def open_value(keyring: Keyring, schema_name: str, value: bytes, topic: str, key: bytes | str | None) -> dict:
    """A wire-format value decoded and opened."""
    return open_record(keyring, schema_name, codec(schema_name).decode(value), topic, key)


class TopicValues:
    """One internal topic's values of one schema (hub.GoldenRecord on customer.golden, hub.AuditEvent on
    audit), as the worker writes and reads them: `encode` seals with `seal_with` (None: in clear, as with
    HUB_SEAL_TOPICS=false), `decode` opens with `open_with` (a value in clear needs no key)."""

    def __init__(self, schema_name: str, topic: str, seal_with: Keyring | None, open_with: Keyring | None = None):
        self.schema_name = schema_name
        self.topic = topic
        self.seal_with = seal_with
        self.open_with = open_with or seal_with
        self.codec = codec(schema_name)

    def encode(self, record: dict, key: bytes | str | None) -> bytes:
        if self.seal_with is not None:
            record = seal(self.seal_with, self.schema_name, record, self.topic, key)
        return self.codec.encode(record)

    def decode(self, value: bytes, key: bytes | str | None) -> dict:
        return self.opened(self.codec.decode(value), key)

    def opened(self, record: dict, key: bytes | str | None) -> dict:
        """A decoded value opened (as `decode`)."""
        if record.get(SEALED_FIELD) is None:
            return record
        if self.open_with is None:
            raise SealError(f"a sealed value on {self.topic} and no keyring to open it")
        return open_record(self.open_with, self.schema_name, record, self.topic, key)


def key_ids(schema_name: str, values: Iterable[bytes | None]) -> dict[str | None, int]:
    """How many values each key id sealed (None: values in clear), for deciding when an old key may go
    (hub.LinkedRecord: the canonical record it carries)."""
    counts: dict[str | None, int] = {}
    record_codec = codec(schema_name)
    for value in values:
        if value is None:
            continue
        record = record_codec.decode(value)
        if schema_name == LINKED:
            record = record.get("canonical") or {}
        sealed = record.get(SEALED_FIELD)
        kid = None if sealed is None else key_id(sealed)
        counts[kid] = counts.get(kid, 0) + 1
    return counts
