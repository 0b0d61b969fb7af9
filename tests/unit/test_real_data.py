"""Real data as it comes (issue 20, findings 12-15): the same address twice
in a golden record, all-caps towns and names, postcodes with a region
prefix. Inputs are the ones the issue names (Odoo's demo contact, an agent's
retyping of it, US and Canadian addresses as CRMs export them)."""

from __future__ import annotations

import pytest

from hub.config import SurvivorshipConfig
from hub.standardise import standardise_and_score
from hub.survivorship import build_golden

T0 = 1_790_000_000_000


def contribution(source: str, source_id: str, at: int, **fields) -> tuple[str, dict]:
    record, quality = standardise_and_score({"source": source, "source_id": source_id, "op": "upsert",
                                             "event_time": at, "record_type": "person", **fields})
    return f"{source}:{source_id}", {"record": record, "quality": quality}


def address(**fields) -> dict:
    record, _ = standardise_and_score({"source": "crm", "source_id": "1", "event_time": T0,
                                       "addresses": [fields]})
    (found,) = record["addresses"]
    return found


# ------------------------------------------------------------------ 12: one address twice


def test_an_address_spelled_two_ways_is_one_address_of_the_golden_record():
    odoo = contribution("crm", "odoo-res-partner-17", T0, given_name="Anja", family_name="Vogel",
                        addresses=[{"line1": "Behrenstraße 55", "city": "Berlin", "postcode": "10117",
                                    "country": "DE"}])
    agent = contribution("contact_center", "CC-4411", T0 + 60_000, given_name="ANJA", family_name="VOGEL",
                         addresses=[{"line1": "Behrenstrasse 55", "city": "BERLIN", "postcode": "10117",
                                     "country": "Germany"}])
    rules = SurvivorshipConfig(source_priority=["crm", "contact_center"])
    for order in ([odoo, agent], [agent, odoo]):
        golden = build_golden("G1", dict(order), {}, rules)
        (kept,) = golden["addresses"]
        # the spelling of the most trusted source, the sources of both, the newest confirmation
        assert (kept["line1"], kept["city"]) == ("Behrenstraße 55", "Berlin")
        assert kept["sources"] == ["contact_center:CC-4411", "crm:odoo-res-partner-17"]
        assert kept["confirmed_at"] == T0 + 60_000


def test_different_addresses_stay_apart():
    home = contribution("crm", "1", T0, addresses=[{"line1": "Behrenstraße 55", "city": "Berlin",
                                                    "postcode": "10117", "country": "DE"}])
    work = contribution("pos", "2", T0, addresses=[{"line1": "Behrenstraße 57", "city": "Berlin",
                                                    "postcode": "10117", "country": "DE"}])
    assert len(build_golden("G1", dict([home, work]), {}, SurvivorshipConfig())["addresses"]) == 2


@pytest.mark.parametrize("raw,expected", [
    ("BERLIN", "Berlin"),
    ("berlin", "Berlin"),
    ("NEWCASTLE UPON TYNE", "Newcastle upon Tyne"),
    ("STOKE-ON-TRENT", "Stoke-on-Trent"),
    ("FRANKFURT AM MAIN", "Frankfurt am Main"),
    ("KING'S LYNN", "King's Lynn"),
    ("ST. ALBANS", "St. Albans"),
    ("LE MANS", "Le Mans"),
    ("SAINT-ÉTIENNE", "Saint-Étienne"),
    ("BAD HOMBURG VOR DER HÖHE", "Bad Homburg vor der Höhe"),
    ("MÜNCHEN", "München"),
    ("McAllen", "McAllen"),           # mixed case is the source's own spelling
    ("London", "London"),
])
def test_all_caps_town_names_are_re_cased(raw, expected):
    assert address(line1="1 High St", city=raw)["city"] == expected


# ------------------------------------------------------------------ 15: all-caps names


def names(given: str | None = None, family: str | None = None) -> tuple:
    record, _ = standardise_and_score({"source": "crm", "source_id": "1", "event_time": T0, "given_name": given,
                                       "family_name": family})
    return record["given_name"], record["family_name"]


@pytest.mark.parametrize("given,family,expected", [
    ("PIETER", "VAN DER BERG", ("Pieter", "van der Berg")),
    ("MARY", "MCDONALD", ("Mary", "McDonald")),
    ("SEAN", "O'BRIEN", ("Sean", "O'Brien")),
    ("ANGUS", "MACDONALD", ("Angus", "MacDonald")),
    ("JOHN", "MACHIN", ("John", "Machin")),           # not a Mac name
    ("MARK", "MACK", ("Mark", "Mack")),
    ("LUDWIG", "VAN BEETHOVEN", ("Ludwig", "van Beethoven")),
    ("KARL-HEINZ", "VON DEM BUSSCHE", ("Karl-Heinz", "von dem Bussche")),
    ("MARIA DE LOURDES", "DOS SANTOS", ("Maria de Lourdes", "Dos Santos")),
    ("GIOVANNI", "DE LUCA", ("Giovanni", "De Luca")),
    ("ANNE-MARIE", "SMITH-JONES", ("Anne-Marie", "Smith-Jones")),
    ("DARCY", "D'ARCY", ("Darcy", "D'Arcy")),
    ("JOHN", "SMITH III", ("John", "Smith III")),
    ("pieter", "van der berg", ("Pieter", "van der Berg")),
    ("Pieter", "Van der Berg", ("Pieter", "Van der Berg")),    # mixed case: the customer's own spelling
    ("Mary", "Mcdonald", ("Mary", "Mcdonald")),
    ("VAN", "NGUYEN", ("Van", "Nguyen")),                       # a given name, not a particle
    ("ÉLODIE", "LE PEN", ("Élodie", "Le Pen")),
])
def test_all_caps_names_are_re_cased_with_particles_and_prefixes(given, family, expected):
    assert names(given, family) == expected


# ------------------------------------------------------------------ 14: postcodes as they come


@pytest.mark.parametrize("fields,postcode,region", [
    # a region prefix, as US and Canadian exports write it
    ({"postcode": "OR 97214", "country": "US"}, "97214", "OR"),
    ({"postcode": "or 97214-1234", "country": "USA"}, "97214-1234", "OR"),
    ({"postcode": "QC G1R 3P1", "country": "CA"}, "G1R 3P1", "QC"),
    ({"postcode": "ON M5V3L9", "country": "Canada"}, "M5V 3L9", "ON"),
    ({"postcode": "NSW 2000", "country": "AU"}, "2000", "NSW"),
    # the record's own region stays
    ({"postcode": "OR 97214", "region": "Oregon", "country": "US"}, "97214", "Oregon"),
    # a country prefix
    ({"postcode": "NL-1012AB", "country": "NL"}, "1012 AB", None),
    ({"postcode": "D-10117", "country": "DE"}, "10117", None),
    # per-country shapes (Google's address data)
    ({"postcode": "1012ab", "country": "NL"}, "1012 AB", None),
    ({"postcode": "1000001", "country": "JP"}, "100-0001", None),
    ({"postcode": "01310100", "country": "BR"}, "01310-100", None),
    ({"postcode": "d02x285", "country": "IE"}, "D02 X285", None),
    ({"postcode": "00950", "country": "PL"}, "00-950", None),
    ({"postcode": "75001", "country": "FR"}, "75001", None),
    ({"postcode": "g1r3p1", "country": "CA"}, "G1R 3P1", None),
    ({"postcode": "sw1a1aa", "country": "GB"}, "SW1A 1AA", None),
    # a prefix that is not a region is part of the postcode (Malta)
    ({"postcode": "VLT 1117", "country": "MT"}, "VLT 1117", None),
])
def test_postcodes_are_split_from_their_region_and_normalised_per_country(fields, postcode, region):
    found = address(line1="1 Main St", **fields)
    assert (found["postcode"], found["region"]) == (postcode, region)


@pytest.mark.parametrize("fields", [
    {"postcode": "XX 97214", "country": "US"},
    {"postcode": "1012", "country": "NL"},
    {"postcode": "QC 97214", "country": "CA"},
    {"postcode": "ABCDE", "country": "DE"},
])
def test_postcodes_that_are_none_of_the_country_are_invalid(fields):
    record, quality = standardise_and_score({"source": "crm", "source_id": "1", "event_time": T0,
                                             "addresses": [{"line1": "1 Main St", **fields}]})
    assert record["addresses"][0]["postcode"] is None and "postcode.invalid" in quality["issues"]
