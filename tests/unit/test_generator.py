"""The synthetic event generator: deterministic, schema-valid, realistically messy."""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict

import orjson
import phonenumbers
import pytest

from hub.schemas import CONSENT_EVENT, CUSTOMER_EVENT, codec, parsed
from hub.testing.generator import (
    AGENCIES, COUNTRY_ALIASES, INVALID_REASONS, NICKNAMES, GeneratedEvent, generate, iter_events, truth,
)

SOURCES = ("crm", "pos", "ecommerce", "contact_center")


@pytest.fixture(scope="module")
def events() -> list[GeneratedEvent]:
    return generate(600, seed=7)


def _customers(events):
    return [e for e in events if e.value is not None and e.topic.startswith("raw.")]


def _consents(events):
    return [e for e in events if e.kind == "consent"]


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()


def _osa(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_stream():
    a = generate(300, seed=11)
    assert a == generate(300, seed=11)
    assert a == list(iter_events(300, seed=11))
    assert a != generate(300, seed=12)


def test_start_and_shares_are_honoured():
    evs = generate(200, seed=3, start_ms=1_000_000_000_000, invalid_share=0.0, consent_share=0.0)
    assert not [e for e in evs if e.kind.startswith("invalid:")]
    assert not _consents(evs)
    assert min(e.value["event_time"] for e in evs) > 1_000_000_000_000
    only = generate(100, seed=3, sources=("crm", "pos"))
    assert {e.topic for e in only} <= {"raw.crm", "raw.pos", "consent.events"}


# ----------------------------------------------------------------------------- schema validity

def test_customer_events_fit_the_avro_schema(events):
    cust = codec(CUSTOMER_EVENT)
    fields = {f["name"] for f in parsed(CUSTOMER_EVENT)["fields"]}
    customers = _customers(events)
    assert customers
    for e in customers:
        v = e.value
        assert set(v) == fields, set(v) ^ fields
        assert e.topic == f"raw.{v['source']}"
        assert e.key == f"{v['source']}:{v['source_id']}".encode()
        assert e.raw is None and e.person_id
        assert e.kind in ("upsert", "update", "delete")
        assert (v["op"] == "delete") == (e.kind == "delete")
        assert cust.decode(cust.encode(v))["source_id"] == v["source_id"]
        orjson.dumps(v)
        for stmt in v["consents"]:
            assert stmt["event_time"] > 0 and stmt["notice_version"] == "v3"


def test_consent_events_fit_the_avro_schema(events):
    con = codec(CONSENT_EVENT)
    consents = _consents(events)
    assert consents
    valid_keys = set(truth(events))
    for e in consents:
        v = e.value
        assert e.topic == "consent.events" and e.raw is None and e.person_id
        assert e.key == f"{v['source']}:{v['source_id']}".encode()
        assert e.key.decode() in valid_keys  # about a record the stream knows
        s = v["statement"]
        assert s["purpose"] in ("service", "marketing", "analytics")
        assert s["channel"] in ("email", "sms", "phone", "any")
        assert s["status"] in ("granted", "denied", "revoked")
        assert s["legal_basis"] in ("consent", "contract", "legitimate_interest")
        assert s["event_time"] > 0 and s["effective_at"] is not None
        con.encode(v)
        orjson.dumps(v)
    statuses = Counter(e.value["statement"]["status"] for e in consents)
    assert statuses["granted"] and statuses["revoked"]
    expired = [e for e in consents if (x := e.value["statement"]["expires_at"]) is not None
               and x < e.value["statement"]["event_time"]]
    assert expired
    assert any(e.value["consents"] for e in _customers(events))


def test_revocations_follow_grants(events):
    granted: dict[tuple, int] = {}
    revoked = 0
    for e in _consents(events):
        s = e.value["statement"]
        k = (e.key, s["purpose"], s["channel"])
        if s["status"] == "granted":
            granted.setdefault(k, s["event_time"])
        elif s["status"] == "revoked":
            assert k in granted and granted[k] < s["event_time"]
            revoked += 1
    assert revoked


def test_stream_is_in_time_order(events):
    times = [e.value["event_time"] if e.kind != "consent" else e.value["statement"]["event_time"]
             for e in events if e.value is not None]
    assert all(a < b for a, b in zip(times, times[1:]))
    assert max(b - a for a, b in zip(times, times[1:])) <= 20


def test_updates_and_deletes_follow_the_upsert(events):
    seen: set[bytes] = set()
    deleted: set[bytes] = set()
    for e in events:
        if e.kind == "upsert":
            assert e.key not in seen
            seen.add(e.key)
        elif e.kind in ("update", "delete", "consent"):
            assert e.key in seen and e.key not in deleted  # nothing about a record before it exists or after its delete
            if e.kind == "delete":
                deleted.add(e.key)
    kinds = Counter(e.kind for e in events)
    assert kinds["update"] and kinds["delete"]
    per_person = len(events) / 600
    assert 2.0 <= per_person <= 3.5


# ----------------------------------------------------------------------------- invalid events

def test_every_invalid_kind_appears_and_is_really_invalid(events):
    invalid = [e for e in events if e.kind.startswith("invalid:")]
    assert {e.kind.split(":", 1)[1] for e in invalid} == set(INVALID_REASONS)
    assert 0.01 < len(invalid) / len(events) < 0.06
    for e in invalid:
        reason = e.kind.split(":", 1)[1]
        assert e.value is None and isinstance(e.raw, bytes) and e.person_id is None
        assert e.topic.startswith("raw.") and isinstance(e.key, bytes)
        topic_source = e.topic[4:]
        if reason == "not_decodable":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(e.raw)
            continue
        if reason == "oversized":
            assert len(e.raw) > 100 * 1024
            continue
        body = orjson.loads(e.raw)
        if reason == "missing_field":
            assert "source_id" not in body or "event_time" not in body
        elif reason == "schema_mismatch":
            assert (isinstance(body["emails"], str) or isinstance(body["phones"], int)
                    or isinstance(body["event_time"], str) or isinstance(body["given_name"], list))
        elif reason == "absurd_value":
            assert body["event_time"] >= 32_472_144_000_000 or body["event_time"] < 631_152_000_000  # 2999 / <1990
        elif reason == "source_mismatch":
            assert body["source"] != topic_source
            codec(CUSTOMER_EVENT).encode(body)  # well-formed apart from the lie


def test_invalid_events_are_not_in_the_truth(events):
    t = truth(events)
    assert len(t) == len({e.key for e in _customers(events)})
    assert set(t.values()) <= {e.person_id for e in _customers(events)}


# ----------------------------------------------------------------------------- realism

def test_persons_are_duplicated_across_sources(events):
    t = truth(events)
    per_person = Counter(t.values())
    multi = [p for p, n in per_person.items() if n >= 2]
    assert len(multi) / len(per_person) > 0.4
    assert max(per_person.values()) >= 4
    sources_of = defaultdict(set)
    for key, pid in t.items():
        sources_of[pid].add(key.split(":", 1)[0])
    assert any(len(s) == 4 for s in sources_of.values())
    assert all(k.split(":", 1)[1].split("-")[0] in ("CRM", "POS", "ECOM", "CC") for k in t)


def test_typos_nicknames_and_other_variants(events):
    names = defaultdict(set)
    families = defaultdict(set)
    birth = defaultdict(set)
    for e in _customers(events):
        v = e.value
        if v["given_name"]:
            names[e.person_id].add(v["given_name"])
        if v["family_name"]:
            families[e.person_id].add(v["family_name"])
        if v["birth_date"]:
            birth[e.person_id].add(v["birth_date"])
    nick_of = {n.casefold(): {x.casefold() for x in nicks} for n, nicks in NICKNAMES.items()}
    nicknames = typos = upper = swapped = 0
    for pid, given in names.items():
        folded = {_fold(g) for g in given}
        if any(nick_of.get(a, set()) & folded for a in folded):
            nicknames += 1
        if any(0 < _osa(a, b) <= 1 and len(a) > 3 for a in folded for b in folded):
            typos += 1
        if any(g.isupper() for g in given) and any(not g.isupper() for g in given):
            upper += 1
        if {_fold(g) for g in given} & {_fold(f) for f in families[pid]}:
            swapped += 1
    assert nicknames >= 10, nicknames
    assert typos >= 10, typos
    assert upper >= 10, upper
    assert swapped >= 1, swapped
    partial = [d for ds in birth.values() for d in ds if len(d) in (4, 7)]
    assert partial


def test_households_share_address_and_family_name(events):
    at = defaultdict(set)
    for e in _customers(events):
        v = e.value
        if v["family_name"] and v["addresses"] and v["addresses"][0]["line1"] and e.value["source"] == "crm":
            a = v["addresses"][0]
            at[(a["line1"], a["postcode"], v["family_name"])].add(e.person_id)
    assert any(len(pids) >= 2 for pids in at.values())


@pytest.fixture(scope="module")
def hard() -> list[GeneratedEvent]:
    """A stream with the agencies, whose records carry full birth dates (and their slips) more often."""
    return generate(3000, seed=9, sources=AGENCIES + ("crm", "pos"), invalid_share=0.0, consent_share=0.0)


def test_invalid_and_future_birth_dates_of_every_kind(hard):
    from hub.standardise import standardise_and_score

    kinds = Counter()
    for e in _customers(hard):
        raw = e.value["birth_date"]
        if not raw or len(raw) != 10:
            continue
        record, quality = standardise_and_score(e.value)
        if record["birth_date"] is not None:
            continue
        assert "birth_date.invalid" in quality["issues"] and record["invalid_values"]["birth_date"]
        year, month, day = raw[:4], raw[5:7], raw[8:10]
        kinds["letter O" if "O" in raw else "month 00" if month == "00" else "month > 12" if month > "12"
              else "day 3x" if day[0] == "3" else "year 1x0x" if year[1] == "0" and year < "1900"
              else "future" if year > "2026" else "other"] += 1
    assert set(kinds) >= {"letter O", "month 00", "month > 12", "day 3x", "year 1x0x", "future"}, kinds


def test_twins_and_copied_birth_dates_in_households(hard):
    from hub.testing.generator import _make_household

    import random as random_module
    r = random_module.Random(3)
    twins = 0
    for i in range(400):
        members = _make_household(r, i * 10, 5, set())
        for a, b in zip(members, members[1:]):
            if a.birth == b.birth and a is not members[0]:
                assert a.given != b.given and a.family == b.family and a.address is b.address
                twins += 1
    assert twins >= 20, twins
    # a record with a household member's birth date: a birth date not its person's, and not a slip of it
    born = defaultdict(set)
    for e in _customers(hard):
        if e.value["birth_date"] and len(e.value["birth_date"]) == 10:
            born[e.person_id].add(e.value["birth_date"])
    assert any(len(dates) > 1 and len({d[:4] for d in dates}) > 1 for dates in born.values())


def test_agencies_keep_different_sets_of_fields(hard):
    fields = defaultdict(Counter)
    for e in _customers(hard):
        if e.kind != "upsert":
            continue  # (an update may add a phone or an e-mail, as in any system)
        v = e.value
        held = fields[v["source"]]
        held["records"] += 1
        for name in ("birth_date", "gender", "national_id", "middle_name"):
            held[name] += bool(v[name])
        held["email"] += bool(v["emails"])
        held["phone"] += bool(v["phones"])
        held["street"] += any(a["line1"] for a in v["addresses"])
        held["postcode"] += any(a["postcode"] for a in v["addresses"])
    registry, clinic = fields["registry"], fields["clinic"]
    assert registry["records"] > 500 and clinic["records"] > 500
    assert registry["email"] == registry["phone"] == 0 and registry["street"] > 0.9 * registry["records"]
    assert clinic["email"] == clinic["street"] == clinic["national_id"] == 0
    assert clinic["phone"] > 0.5 * clinic["records"] and clinic["postcode"] > 0.5 * clinic["records"]
    assert registry["birth_date"] > 0.9 * registry["records"] and clinic["gender"] > 0.8 * clinic["records"]


def test_phones_are_valid_for_their_country():
    evs = generate(1500, seed=5)
    country = {}
    for e in _customers(evs):
        for a in e.value["addresses"]:
            iso = COUNTRY_ALIASES.get((a["country"] or "").lower())
            if iso:
                country.setdefault(e.person_id, iso)
    total = valid = 0
    for e in _customers(evs):
        region = country.get(e.person_id)
        for ph in e.value["phones"]:
            number = ph["number"]
            if region is None and not number.startswith("+"):
                continue
            total += 1
            try:
                valid += phonenumbers.is_valid_number(phonenumbers.parse(number, region))
            except phonenumbers.NumberParseException:
                pass
    assert total > 1000
    assert valid / total > 0.95, valid / total
