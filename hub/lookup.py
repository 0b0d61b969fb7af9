"""Secondary lookup keys of a golden record: which identifiers find it.

Pure. A golden record is found by its loyalty id, each of its e-mails and
phones, and each of its member source records. Keys are keyed hashes of
`<kind>:<standardised value>` (the matcher's `hash_key`, with the PII key),
so Redis never holds a plain e-mail or phone in a key name. A query value is
standardised exactly as ingest does, so "+44 7700 900123" and "07700900123"
give the same key.
"""

from __future__ import annotations

import functools

from hub.matching.features import hash_key
from hub.standardise import standard_email, standard_identifier, standard_phone

# query kind -> prefix of the hashed value (golden_id is read directly, not through the index)
PREFIX = {"loyalty_id": "l", "email": "e", "phone": "p", "source": "s"}
KINDS = ("golden_id", *PREFIX)


def identifiers(golden: dict | None) -> set[str]:
    """Plain `<prefix>:<value>` identifiers that find this golden record."""
    if golden is None:
        return set()
    found = {f"s:{member}" for member in golden.get("members") or ()}
    if golden.get("loyalty_id"):
        found.add(f"l:{golden['loyalty_id']}")
    found.update(f"e:{e['address']}" for e in golden.get("emails") or ())
    found.update(f"p:{p['number']}" for p in golden.get("phones") or ())
    return found


def index_keys(golden: dict | None, secret: bytes) -> set[str]:
    return {hash_key(secret, value) for value in identifiers(golden)}


def changes(before: dict | None, after: dict | None, secret: bytes) -> tuple[set[str], set[str]]:
    """(keys to remove, keys to add) when a golden record goes from `before` to
    `after` (None: it did not exist, or no longer does)."""
    old, new = identifiers(before), identifiers(after)
    return ({hash_key(secret, v) for v in old - new}, {hash_key(secret, v) for v in new - old})


def query_value(kind: str, value: str, region: str = "GB") -> str | None:
    """The plain identifier for a query, standardised as at ingest; None when
    the value cannot be one (a malformed e-mail or phone number)."""
    if kind == "email":
        email = standard_email(value)
        return f"e:{email}" if email else None
    if kind == "phone":
        phone = standard_phone(value, region)
        return f"p:{phone}" if phone else None
    if kind == "loyalty_id":
        loyalty = standard_identifier(value)
        return f"l:{loyalty}" if loyalty else None
    if kind == "source":
        return f"s:{value}" if ":" in value and value.split(":", 1)[1] else None
    raise ValueError(f"unknown lookup kind {kind!r}")


DECOY_GOLDEN_ID = "~decoy"  # never a golden id ("G" + hex): no key of the store ever holds it


@functools.lru_cache(maxsize=1)
def decoy_golden() -> dict:
    """A golden record of ordinary size and shape that belongs to nobody. A
    lookup that finds nothing opens, parses and judges it, and throws it
    away, so an identifier nobody holds costs what a withheld one costs: the
    answer's time must not tell a target who exists beyond its consent."""
    from hub.config import SurvivorshipConfig
    from hub.standardise import standardise_and_score
    from hub.survivorship import build_golden, stamp

    contributions = {}
    for n, source in enumerate(("crm", "pos")):
        record, quality = standardise_and_score({
            "source": source, "source_id": f"decoy{n}", "op": "upsert", "record_type": "person",
            "event_time": 1_700_000_000_000 + n, "given_name": "Alexandra", "family_name": "Decoy-Whitfield",
            "birth_date": "1984-06-21", "loyalty_id": "L000000000", "preferences": {"store": "Leeds", "language": "en"},
            "emails": [{"address": f"alexandra.decoy{n}@example.com", "verified": True}],
            "phones": [{"number": f"+44 7700 90000{n}"}],
            "addresses": [{"line1": f"{n + 1} Decoy Street", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}]})
        contributions[f"{source}:decoy{n}"] = {"record": record, "quality": quality}
    statements = {"crm:decoy0": [{"purpose": purpose, "channel": "email", "status": "denied", "legal_basis": "consent",
                                  "effective_at": None, "expires_at": None, "collection_point": "web",
                                  "notice_version": "v1", "evidence": None, "event_time": 1_700_000_000_002}
                                 for purpose in ("service", "marketing", "analytics")]}
    return stamp(build_golden(DECOY_GOLDEN_ID, contributions, statements, SurvivorshipConfig()), None,
                 1_700_000_000_003, "source_event", None)
