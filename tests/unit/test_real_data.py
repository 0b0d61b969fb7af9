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
