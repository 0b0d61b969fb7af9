"""Unit tests for hub.standardise: value standardisation and quality scoring."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from hub.standardise import (
    DROPPED_CODES,
    ISSUE_CODES,
    MAX_LEN,
    MAX_PREFERENCES,
    count_supplied,
    normalise_country,
    quality,
    standardise,
    standardise_and_score,
)


def base(**fields) -> dict:
    event = {
        "source": "crm",
        "source_id": "42",
        "op": "upsert",
        "event_time": 1_700_000_000_000,
        "record_type": "person",
    }
    event.update(fields)
    return event


def std(**fields):
    return standardise(base(**fields))


def addr(**fields) -> dict:
    return {"line1": "1 High St", "city": "Leeds", **fields}


# --------------------------------------------------------------------- strings


@pytest.mark.parametrize("raw, expected", [
    ("  John  ", "John"),
    ("Jo\thn", "Jo hn"),                  # tab is whitespace -> word break
    ("Mary\n  Ann", "Mary Ann"),
    ("Jo\u200bhn", "John"),               # zero-width space (Cf) removed
    ("Jo\x00hn\x07", "John"),             # NUL/BEL (Cc) removed
    ("\u202eJohn", "John"),               # bidi override removed
    ("\ufeffJohn", "John"),               # BOM removed
    ("\uff2a\uff4f\uff48\uff4e", "John"),   # full-width -> NFKC
    ("Jos\u0065\u0301", "Jos\u00e9"),     # decomposed accent composed
    ("   ", None),
    ("", None),
    ("\u200b\u200b", None),
])
def test_string_cleanup(raw, expected):
    out, issues = std(given_name=raw)
    assert out["given_name"] == expected
    assert issues == []


def test_lone_surrogate_removed():
    out, _ = std(family_name="Sm\ud800ith")
    assert out["family_name"] == "Smith"


def test_oversized_string_truncated():
    out, issues = std(family_name="A" + "b" * 1000)
    assert len(out["family_name"]) == MAX_LEN
    assert issues == ["family_name.truncated"]


def test_oversized_address_line_truncated():
    out, issues = std(addresses=[addr(line1="x" * 300)])
    assert len(out["addresses"][0]["line1"]) == MAX_LEN
    assert issues == ["address.truncated"]


def test_non_string_scalar_is_invalid():
    out, issues = std(given_name={"first": "John"}, family_name=123)
    assert out["given_name"] is None
    assert out["family_name"] is None          # numeric -> no letters
    assert issues == ["given_name.invalid", "family_name.invalid"]


# ----------------------------------------------------------------------- names


@pytest.mark.parametrize("raw, expected", [
    ("o'brien", "O'Brien"),
    ("O'BRIEN", "O'Brien"),
    ("o\u2019brien", "O\u2019Brien"),
    ("smith-jones", "Smith-Jones"),
    ("SMITH-JONES", "Smith-Jones"),
    ("van der berg", "van der Berg"),  # issue 20: particles and Mc prefixes
    ("mcdonald", "McDonald"),
    ("McDonald", "McDonald"),          # mixed case kept
    ("van Dijk", "van Dijk"),
    ("DE LA CRUZ", "De la Cruz"),
    ("ÉMILE", "Émile"),
    ("müller", "Müller"),
    ("j.r.", "J.R."),
])
def test_name_case(raw, expected):
    out, issues = std(family_name=raw)
    assert out["family_name"] == expected
    assert issues == []


@pytest.mark.parametrize("raw, expected", [
    ("Mr John", "John"),
    ("MR. JOHN", "John"),
    ("mrs jane", "Jane"),
    ("Ms. Mary Ann", "Mary Ann"),
    ("Dr.Who", "Who"),
    ("Dr Prof Anna", "Anna"),
    ("Drew", "Drew"),                 # not a title
    ("Missy", "Missy"),
    ("Mrinal", "Mrinal"),
])
def test_title_stripped_from_given_name(raw, expected):
    out, issues = std(given_name=raw)
    assert out["given_name"] == expected
    assert issues == []


def test_title_not_stripped_from_family_name():
    out, _ = std(family_name="Dr Smith")
    assert out["family_name"] == "Dr Smith"


def test_title_only_given_name_invalid():
    out, issues = std(given_name="Mrs.")
    assert out["given_name"] is None
    assert issues == ["given_name.invalid"]


@pytest.mark.parametrize("attr", ["given_name", "middle_name", "family_name"])
@pytest.mark.parametrize("raw", ["1234", "--", "...", "12-34", "?!", "\U0001F338"])
def test_names_without_letters_invalid(attr, raw):
    out, issues = std(**{attr: raw})
    assert out[attr] is None
    assert issues == [f"{attr}.invalid"]


def test_emoji_and_rtl_names_kept_safely():
    out, issues = std(given_name="Anna \U0001F338", family_name="\u202b\u0645\u062d\u0645\u062f\u202c",
                      middle_name="\u05d3\u05d5\u05d3")
    assert out["given_name"] == "Anna \U0001F338"
    assert out["family_name"] == "\u0645\u062d\u0645\u062f"   # embedding controls stripped
    assert out["middle_name"] == "\u05d3\u05d5\u05d3"
    assert issues == []


def test_cjk_name_kept():
    out, _ = std(family_name="李", given_name="小龍")
    assert (out["family_name"], out["given_name"]) == ("李", "小龍")


def test_organisation_name_keeps_case():
    out, issues = standardise(base(record_type="organisation",
                                   organisation_name="  ACME\u200b  widgets LTD  "))
    assert out["organisation_name"] == "ACME widgets LTD"
    assert issues == []


@pytest.mark.parametrize("raw, expected, issues", [
    ("3M", "3M", []),
    ("1&1", "1&1", []),
    ("Dr Oetker", "Dr Oetker", []),     # no title stripping
    ("---", None, ["organisation_name.invalid"]),
])
def test_organisation_name_validity(raw, expected, issues):
    out, got = std(organisation_name=raw)
    assert out["organisation_name"] == expected
    assert got == issues


# ---------------------------------------------------------------------- emails


def test_email_normalised_lowercase():
    out, issues = std(emails=[{"address": " John.Smith@Example.COM ", "kind": "Work", "verified": False}])
    assert out["emails"] == [{"address": "john.smith@example.com", "kind": "work", "verified": False}]
    assert issues == []


def test_email_kind_defaults_none():
    out, _ = std(emails=[{"address": "a@example.com"}])
    assert out["emails"] == [{"address": "a@example.com", "kind": None, "verified": False}]


@pytest.mark.parametrize("bad", [
    "not-an-email", "a@b", "@example.com", "john@", "a..b@example.com", "john smith@example.com",
    "a@b@example.com", "john@localhost", "x@y.test", "", "   ", "a@" + "b" * 300 + ".com",
])
def test_invalid_email_dropped(bad):
    out, issues = std(emails=[{"address": bad, "verified": True}])
    assert out["emails"] == []
    assert issues == ["email.invalid"]


def test_email_missing_address_invalid():
    out, issues = std(emails=[{"verified": True}, None])
    assert out["emails"] == []
    assert issues == ["email.invalid", "email.invalid"]


def test_internationalised_email_accepted():
    out, issues = std(emails=[{"address": "J\u00f6rg@B\u00fccher.de"}])
    assert out["emails"][0]["address"] == "j\u00f6rg@b\u00fccher.de"
    assert issues == []


def test_email_dedup_keeps_first_and_ors_verified():
    out, issues = std(emails=[
        {"address": "a@example.com", "kind": None, "verified": False},
        {"address": "b@example.com", "kind": "work", "verified": False},
        {"address": "A@EXAMPLE.com", "kind": "personal", "verified": True},
    ])
    assert out["emails"] == [
        {"address": "a@example.com", "kind": "personal", "verified": True},
        {"address": "b@example.com", "kind": "work", "verified": False},
    ]
    assert issues == []


def test_bare_string_email_entries_accepted():
    out, _ = std(emails=["a@example.com"])
    assert out["emails"] == [{"address": "a@example.com", "kind": None, "verified": False}]


# ---------------------------------------------------------------------- phones


@pytest.mark.parametrize("raw, expected", [
    ("07911 123456", "+447911123456"),
    ("07911-123-456", "+447911123456"),
    ("+44 (0)20 7946 0958", "+442079460958"),
    ("020 7946 0958", "+442079460958"),
    ("0044 7911 123456", "+447911123456"),
    ("+1 (202) 555-0143", "+12025550143"),
    ("+49 170 1234567", "+491701234567"),
])
def test_phone_e164_default_region_gb(raw, expected):
    out, issues = std(phones=[{"number": raw}])
    assert out["phones"] == [{"number": expected, "kind": None, "verified": False}]
    assert issues == []


def test_phone_region_from_first_address_country():
    out, issues = std(phones=[{"number": "(202) 555-0143"}],
                      addresses=[addr(country="USA", postcode="20500")])
    assert out["phones"][0]["number"] == "+12025550143"
    assert issues == []


def test_phone_region_from_country_name():
    out, _ = std(phones=[{"number": "0170 1234567"}], addresses=[addr(country="Deutschland")])
    assert out["phones"][0]["number"] == "+491701234567"


def test_phone_region_skips_address_without_country():
    out, _ = std(phones=[{"number": "0170 1234567"}],
                 addresses=[addr(line1="A"), addr(line1="B", country="DE")])
    assert out["phones"][0]["number"] == "+491701234567"


def test_phone_default_region_parameter():
    event = base(phones=[{"number": "(202) 555-0143"}])
    out, issues = standardise(event, default_region="US")
    assert out["phones"][0]["number"] == "+12025550143"
    assert issues == []
    out, issues = standardise(event)           # GB default: not a valid GB number
    assert out["phones"] == []
    assert issues == ["phone.invalid"]


def test_phone_unknown_country_falls_back_to_default():
    out, issues = std(phones=[{"number": "07911 123456"}], addresses=[addr(country="Narnia")])
    assert out["phones"][0]["number"] == "+447911123456"
    assert issues == ["country.unknown"]


@pytest.mark.parametrize("bad", ["12", "abc", "", "000000", "+44 12", "07700 90012345678", "x" * 400])
def test_invalid_phone_dropped(bad):
    out, issues = std(phones=[{"number": bad, "verified": True}])
    assert out["phones"] == []
    assert issues == ["phone.invalid"]


def test_phone_dedup_across_formats():
    out, issues = std(phones=[
        {"number": "07911 123456", "kind": "mobile", "verified": False},
        {"number": "+447911123456", "kind": "home", "verified": True},
        {"number": "0044-7911-123456", "verified": False},
    ])
    assert out["phones"] == [{"number": "+447911123456", "kind": "mobile", "verified": True}]
    assert issues == []


# ------------------------------------------------------------------- countries


@pytest.mark.parametrize("raw, expected", [
    ("GB", "GB"), ("gb", "GB"), ("GBR", "GB"), ("UK", "GB"), ("U.K.", "GB"),
    ("United Kingdom", "GB"), ("england", "GB"), ("Great Britain", "GB"), ("Scotland", "GB"),
    ("US", "US"), ("usa", "US"), ("U.S.A.", "US"), ("United States", "US"),
    ("United States of America", "US"), ("the United States", "US"),
    ("DE", "DE"), ("DEU", "DE"), ("Germany", "DE"), ("Deutschland", "DE"),
    ("FR", "FR"), ("France", "FR"), ("FRA", "FR"),
    ("Spain", "ES"), ("España", "ES"), ("ESP", "ES"), ("Italy", "IT"), ("ITA", "IT"),
    ("Netherlands", "NL"), ("The Netherlands", "NL"), ("Holland", "NL"), ("NLD", "NL"),
    ("Belgium", "BE"), ("Ireland", "IE"), ("Eire", "IE"), ("Portugal", "PT"),
    ("Sweden", "SE"), ("Norway", "NO"), ("Denmark", "DK"), ("Finland", "FI"),
    ("Poland", "PL"), ("Austria", "AT"), ("Österreich", "AT"), ("Switzerland", "CH"),
    ("Schweiz", "CH"), ("Czech Republic", "CZ"), ("Czechia", "CZ"), ("Canada", "CA"),
    ("Australia", "AU"), ("New Zealand", "NZ"), ("India", "IN"), ("Japan", "JP"),
    ("China", "CN"), ("Brazil", "BR"), ("Brasil", "BR"), ("Mexico", "MX"), ("México", "MX"),
    ("South Africa", "ZA"), ("ZAF", "ZA"), ("Türkiye", "TR"), ("South Korea", "KR"),
    ("Singapore", "SG"), ("  united   kingdom ", "GB"), ("Ａｕｓｔｒｉａ", "AT"),
    ("XK", "XK"), ("aq", "AQ"),
])
def test_country_normalised(raw, expected):
    out, issues = std(addresses=[addr(country=raw)])
    assert out["addresses"][0]["country"] == expected
    assert issues == []


@pytest.mark.parametrize("raw", ["Narnia", "ZZ", "XYZ", "123", "Europe"])
def test_unknown_country(raw):
    out, issues = std(addresses=[addr(country=raw)])
    assert out["addresses"][0]["country"] is None
    assert issues == ["country.unknown"]


def test_normalise_country_direct():
    assert normalise_country("great britain") == "GB"
    assert normalise_country("nowhere") is None


# ------------------------------------------------------------------- postcodes


@pytest.mark.parametrize("raw, expected", [
    ("sw1a1aa", "SW1A 1AA"), ("SW1A 1AA", "SW1A 1AA"), ("  sw1a   1aa ", "SW1A 1AA"),
    ("m11ae", "M1 1AE"), ("B33 8TH", "B33 8TH"), ("cr26xh", "CR2 6XH"), ("dn551pt", "DN55 1PT"),
    ("w1a0ax", "W1A 0AX"), ("ec1a1bb", "EC1A 1BB"), ("GIR0AA", "GIR 0AA"),
])
def test_gb_postcode(raw, expected):
    out, issues = std(addresses=[addr(postcode=raw, country="GB")])
    assert out["addresses"][0]["postcode"] == expected
    assert issues == []


def test_crown_dependency_postcode_uses_gb_format():
    out, _ = std(addresses=[addr(postcode="je24ww", country="JE")])
    assert out["addresses"][0]["postcode"] == "JE2 4WW"


@pytest.mark.parametrize("raw", ["12345", "SW1A", "ABCDEFG", "1AA SW1"])
def test_gb_postcode_invalid(raw):
    out, issues = std(addresses=[addr(postcode=raw, country="UK")])
    assert out["addresses"][0]["postcode"] is None
    assert issues == ["postcode.invalid"]


@pytest.mark.parametrize("raw, expected", [
    ("20500", "20500"), ("20500-0003", "20500-0003"), ("205000003", "20500-0003"),
    (" 20500 - 0003 ", "20500-0003"),
])
def test_us_zip(raw, expected):
    out, issues = std(addresses=[addr(postcode=raw, country="US")])
    assert out["addresses"][0]["postcode"] == expected
    assert issues == []


@pytest.mark.parametrize("raw", ["2050", "205001", "ABCDE", "20500-03"])
def test_us_zip_invalid(raw):
    out, issues = std(addresses=[addr(postcode=raw, country="US")])
    assert out["addresses"][0]["postcode"] is None
    assert issues == ["postcode.invalid"]


@pytest.mark.parametrize("raw, country, expected", [
    ("10115", "DE", "10115"), ("1012  ab", "NL", "1012 AB"), ("k1a 0b1", "CA", "K1A 0B1"),
    ("sw1a1aa", None, "SW1A1AA"),                 # no country: no format guessing
])
def test_other_postcodes_upper_and_collapsed(raw, country, expected):
    out, issues = std(addresses=[addr(postcode=raw, country=country)])
    assert out["addresses"][0]["postcode"] == expected
    assert issues == []


# ------------------------------------------------------------------- addresses


def test_address_shape_and_cleanup():
    out, issues = std(addresses=[{"line1": " 10  Downing\tSt ", "line2": "", "city": "London",
                                  "region": " ", "postcode": "sw1a2aa", "country": "gb",
                                  "kind": "Home", "verified": True}])
    assert out["addresses"] == [{"line1": "10 Downing St", "line2": None, "city": "London",
                                 "region": None, "postcode": "SW1A 2AA", "country": "GB",
                                 "kind": "home", "verified": True}]
    assert issues == []


def test_address_case_kept():
    out, _ = std(addresses=[addr(line1="FLAT 2, 10 HIGH ST", city="LONDON")])
    assert out["addresses"][0]["line1"] == "FLAT 2, 10 HIGH ST"


@pytest.mark.parametrize("item", [
    {"country": "GB"},
    {"line2": "Flat 2", "region": "Kent"},
    {"line1": " ", "city": "\u200b", "postcode": ""},
    {"postcode": "nonsense", "country": "GB"},     # postcode dropped -> nothing left
    {},
])
def test_empty_address_dropped(item):
    out, issues = std(addresses=[item])
    assert out["addresses"] == []
    assert issues == ["address.empty"]


def test_address_with_only_postcode_kept():
    out, issues = std(addresses=[{"postcode": "sw1a1aa", "country": "GB"}])
    assert out["addresses"][0]["postcode"] == "SW1A 1AA"
    assert issues == []


def test_non_dict_address_invalid():
    out, issues = std(addresses=["1 High St, Leeds"])
    assert out["addresses"] == []
    assert issues == ["address.invalid"]


def test_address_dedup():
    out, issues = std(addresses=[
        {"line1": "10 Downing St", "city": "London", "postcode": "SW1A 2AA", "country": "GB"},
        {"line1": "10  downing st", "city": "LONDON", "postcode": "sw1a2aa", "country": "United Kingdom",
         "kind": "home", "verified": True},
        {"line1": "11 Downing St", "city": "London", "postcode": "SW1A 2AB", "country": "GB"},
    ])
    assert len(out["addresses"]) == 2
    first = out["addresses"][0]
    assert first["line1"] == "10 Downing St"
    assert first["verified"] is True and first["kind"] == "home"
    assert out["addresses"][1]["line1"] == "11 Downing St"
    assert issues == []


# ------------------------------------------------------------------ birth date


@pytest.mark.parametrize("raw, expected", [
    ("1985-04-12", "1985-04-12"),
    ("1985-4-2", "1985-04-02"),
    ("1985/04/12", "1985-04-12"),
    ("12/04/1985", "1985-04-12"),
    ("12.04.1985", "1985-04-12"),
    ("12-04-1985", "1985-04-12"),
    ("2.4.1985", "1985-04-02"),
    ("19850412", "1985-04-12"),
    ("1985-04", "1985-04"),
    ("1985", "1985"),
    ("1985-04-12T00:00:00Z", "1985-04-12"),
    ("1985-04-12T23:59:59.123+02:00", "1985-04-12"),
    ("1985-04-12 10:00:00", "1985-04-12"),
    ("2000-02-29", "2000-02-29"),
    ("1900-01-01", "1900-01-01"),
    (" 1985-04-12 ", "1985-04-12"),
])
def test_birth_date_valid(raw, expected):
    out, issues = std(birth_date=raw)
    assert out["birth_date"] == expected
    assert issues == []


@pytest.mark.parametrize("raw", [
    "0000-00-00", "1999-02-30", "1999-02-29", "2999-01-01", "1899-12-31", "1985-13-01",
    "1985-00-10", "1985-04-00", "1985-04-31", "31/02/1990", "04/25/1985", "12/04/85",
    "yesterday", "1985-04-12-01", "0000", "3000", "85", "2999-01", "1985-4-12x",
])
def test_birth_date_invalid(raw):
    out, issues = std(birth_date=raw)
    assert out["birth_date"] is None
    assert issues == ["birth_date.invalid"]


def test_birth_date_after_the_event_is_rejected_the_event_day_accepted():
    """"In the future" is judged against the event's own time, not the clock."""
    day = dt.datetime.fromtimestamp(base()["event_time"] / 1000, dt.timezone.utc).date()
    after = day + dt.timedelta(days=1)
    out, issues = std(birth_date=day.isoformat())
    assert out["birth_date"] == day.isoformat() and issues == []
    out, issues = std(birth_date=after.isoformat())
    assert out["birth_date"] is None and issues == ["birth_date.invalid"]
    assert out["invalid_values"] == {"birth_date": after.isoformat()}  # still evidence for matching
    out, issues = std(birth_date=str(day.year))
    assert out["birth_date"] == str(day.year) and issues == []
    out, issues = std(birth_date=str(day.year + 1))
    assert out["birth_date"] is None and issues == ["birth_date.invalid"]


@pytest.mark.parametrize("year", [2000, 2050])
def test_birth_date_standardises_the_same_whatever_the_clock(clock, year):
    """A replay years later (or a worker with a wrong clock) must give the
    answer the event's own time gives: the event is from November 2023."""
    clock(year)
    assert base()["event_time"] == 1_700_000_000_000  # 2023-11-14
    out, issues = std(birth_date="2024-03-01")
    assert out["birth_date"] is None and out["invalid_values"] == {"birth_date": "2024-03-01"}
    out, issues = std(birth_date="2023-11-01")
    assert out["birth_date"] == "2023-11-01" and issues == []


@pytest.mark.parametrize("raw, kept", [
    ("1960-16-03", "1960-16-03"),           # month 16
    ("1960-00-03", "1960-00-03"),           # month 00
    ("1960-03-32", "1960-03-32"),           # day 32
    ("1060-03-12", "1060-03-12"),           # year 1060 for 1960
    ("19O4-O3-12", "1904-03-12"),           # letter O for zero (then a valid date: 19O4 is still invalid input)
    ("32/03/1960", "1960-03-32"),           # D/M/Y laid out as Y-M-D
    ("03/16/1960", "1960-16-03"),           # M/D/Y: read as D/M/Y, a swapped day and month
    ("1960.13.5", "1960-13-05"),
    ("19601603", "1960-16-03"),
    ("2999-01-01", "2999-01-01"),           # after the event
    ("1960-02-30T10:00:00", "1960-02-30"),
    ("0000-00-00", None), ("0000", None),   # a placeholder is no evidence
    ("yesterday", None), ("secret-date", None),
])
def test_invalid_birth_date_is_flagged_and_kept_for_matching(raw, kept):
    out, issues = std(birth_date=raw)
    assert out["birth_date"] is None and issues == ["birth_date.invalid"]
    assert out["invalid_values"] == ({"birth_date": kept} if kept else {})


def test_a_valid_birth_date_keeps_nothing_aside_and_a_sent_invalid_values_is_replaced():
    out, _ = std(birth_date="1985-04-12", invalid_values={"birth_date": "1900-01-01"})
    assert out["birth_date"] == "1985-04-12" and out["invalid_values"] == {}


def test_birth_date_empty_is_not_an_issue():
    out, issues = std(birth_date="  ")
    assert out["birth_date"] is None and issues == []


# ---------------------------------------------------------------------- gender


@pytest.mark.parametrize("raw, expected", [
    ("f", "F"), ("F", "F"), ("Female", "F"), ("FEMALE", "F"), ("w", "F"), ("woman", "F"), ("Frau", "F"),
    ("m", "M"), ("Male", "M"), ("man", "M"), ("HERR", "M"),
    ("x", "X"), ("Other", "X"), ("non-binary", "X"), ("nonbinary", "X"), ("Diverse", "X"),
    ("u", None), ("Unknown", None), ("", None), ("not specified", None), ("  ", None), (None, None),
])
def test_gender(raw, expected):
    out, issues = std(gender=raw)
    assert out["gender"] == expected
    assert issues == []


@pytest.mark.parametrize("raw", ["banana", "1", "mf", "femal"])
def test_gender_unknown(raw):
    out, issues = std(gender=raw)
    assert out["gender"] is None
    assert issues == ["gender.unknown"]


# ----------------------------------------------------------------- identifiers


@pytest.mark.parametrize("attr", ["national_id", "loyalty_id"])
@pytest.mark.parametrize("raw, expected", [
    ("ab 12 34 56 c", "AB123456C"), ("ab-12.34-56", "AB123456"), ("  x ", "X"),
    ("", None), (None, None), (12345, "12345"),
])
def test_identifiers(attr, raw, expected):
    out, issues = std(**{attr: raw})
    assert out[attr] == expected
    assert issues == []


def test_identifier_punctuation_only_invalid():
    out, issues = std(loyalty_id=" - . - ")
    assert out["loyalty_id"] is None
    assert issues == ["loyalty_id.invalid"]


# ----------------------------------------------------------------- preferences


def test_preferences_cleaned():
    out, issues = std(preferences={" language ": " en ", "": "x", "newsletter": "", "ch\u200bannel": "sms"})
    assert out["preferences"] == {"language": "en", "channel": "sms"}
    assert issues == []


def test_preferences_capped():
    prefs = {f"k{i}": str(i) for i in range(80)}
    out, issues = std(preferences=prefs)
    assert len(out["preferences"]) == MAX_PREFERENCES
    assert list(out["preferences"]) == [f"k{i}" for i in range(MAX_PREFERENCES)]
    assert issues == ["preferences.truncated"]


def test_preferences_missing_or_bad():
    assert std()[0]["preferences"] == {}
    out, issues = std(preferences=["a"])
    assert out["preferences"] == {} and issues == ["preferences.invalid"]


# ------------------------------------------------------------ pass-through etc


def test_passthrough_fields_and_consents():
    consents = [{"purpose": "marketing", "channel": "email", "status": "granted",
                 "legal_basis": "consent", "event_time": 1}]
    event = base(consents=consents, extra_field="kept")
    out, _ = standardise(event)
    for key in ("source", "source_id", "op", "event_time", "record_type", "extra_field"):
        assert out[key] == event[key]
    assert out["consents"] == consents
    assert out["consents"] is not consents


def test_missing_fields_get_schema_defaults():
    out, issues = standardise(base())
    assert issues == []
    for key in ("given_name", "middle_name", "family_name", "birth_date", "gender",
                "national_id", "loyalty_id", "organisation_name"):
        assert out[key] is None
    for key in ("emails", "phones", "addresses", "consents"):
        assert out[key] == []
    assert out["preferences"] == {}


def full_event() -> dict:
    return base(
        given_name="  MR JOHN ", middle_name="\u200b", family_name="o'brien",
        birth_date="12/04/1985", gender="male",
        emails=[{"address": "John@Example.com", "kind": None, "verified": False},
                {"address": "john@example.com", "kind": "work", "verified": True},
                {"address": "garbage", "kind": None, "verified": False}],
        phones=[{"number": "07911 123456", "kind": "mobile", "verified": False},
                {"number": "12", "kind": None, "verified": False}],
        addresses=[{"line1": "1 High St", "line2": None, "city": "leeds", "region": None,
                    "postcode": "ls11aa", "country": "England", "kind": "home", "verified": False},
                   {"line1": None, "line2": None, "city": None, "region": None, "postcode": None,
                    "country": "Narnia", "kind": None, "verified": False}],
        national_id=None, loyalty_id="LY-123 456", organisation_name=None,
        preferences={"lang": "en"},
        consents=[{"purpose": "service", "channel": "any", "status": "granted",
                   "legal_basis": "contract", "event_time": 5}],
    )


def test_input_not_mutated():
    event = full_event()
    snapshot = copy.deepcopy(event)
    out, _ = standardise(event)
    assert event == snapshot
    out["emails"][0]["verified"] = False
    out["consents"].append({})
    out["preferences"]["x"] = "y"
    assert event == snapshot


def test_issue_codes_are_from_vocabulary_and_never_contain_values():
    event = full_event()
    event["given_name"] = "1234"
    event["gender"] = "banana"
    event["birth_date"] = "secret-date"
    event["family_name"] = "Z" * 400
    _, issues = standardise(event)
    assert issues
    assert set(issues) <= ISSUE_CODES
    for code in issues:
        for secret in ("1234", "banana", "secret", "garbage", "Narnia", "ZZZ"):
            assert secret not in code
    assert DROPPED_CODES <= ISSUE_CODES
    assert not any(code.endswith(".truncated") for code in DROPPED_CODES)


# --------------------------------------------------------------------- quality


def test_quality_worked_example():
    event = full_event()
    # supplied: given, family, birth_date, gender, loyalty_id (middle is blank) = 5
    #           + 3 emails + 2 phones + 2 addresses = 12
    assert count_supplied(event) == 12
    clean, q = standardise_and_score(event)
    assert clean["given_name"] == "John"
    assert clean["family_name"] == "O'Brien"
    assert clean["middle_name"] is None
    assert clean["birth_date"] == "1985-04-12"
    assert clean["gender"] == "M"
    assert clean["emails"] == [{"address": "john@example.com", "kind": "work", "verified": True}]
    assert clean["phones"] == [{"number": "+447911123456", "kind": "mobile", "verified": False}]
    assert clean["addresses"] == [{"line1": "1 High St", "line2": None, "city": "Leeds",
                                   "region": None, "postcode": "LS1 1AA", "country": "GB",
                                   "kind": "home", "verified": False}]
    assert clean["loyalty_id"] == "LY123456"
    # dropped: 1 email, 1 phone, 1 (empty) address -> 3 of 12
    assert q["issues"] == ["email.invalid", "address.empty", "phone.invalid"]
    assert q["completeness"] == 1.0            # all 7 person groups present
    assert q["validity"] == 0.75               # (12 - 3) / 12
    assert q["score"] == 0.9                   # 0.6 * 1.0 + 0.4 * 0.75
    assert set(q) == {"completeness", "validity", "score", "issues"}


def test_quality_partial_person():
    event = base(given_name="Ann", family_name="Lee", emails=[{"address": "bad"}],
                 gender="banana", addresses=[addr(country="Narnia")])
    clean, q = standardise_and_score(event)
    # present: given, family, addresses -> 3/7; supplied 5 (given, family, gender,
    # email, address); dropped: email.invalid, gender.unknown, country.unknown -> 2/5
    assert q["completeness"] == round(3 / 7, 4) == 0.4286
    assert q["validity"] == 0.4
    assert q["score"] == round(0.6 * 0.4286 + 0.4 * 0.4, 4)
    assert sorted(q["issues"]) == ["country.unknown", "email.invalid", "gender.unknown"]


def test_quality_truncation_does_not_lower_validity():
    _, q = standardise_and_score(base(family_name="x" * 300))
    assert q["validity"] == 1.0
    assert q["issues"] == ["family_name.truncated"]


def test_quality_organisation():
    event = base(record_type="organisation", organisation_name="Acme Ltd",
                 emails=[{"address": "info@acme.example"}], given_name="ignored for completeness")
    _, q = standardise_and_score(event)
    assert q["completeness"] == 0.5           # name + emails of 4 groups
    assert q["validity"] == 1.0
    assert q["score"] == 0.7


def test_quality_nothing_supplied():
    _, q = standardise_and_score(base())
    assert q == {"completeness": 0.0, "validity": 1.0, "score": 0.4, "issues": []}


def test_quality_all_invalid_clamped():
    _, q = standardise_and_score(base(given_name="123", family_name="!!"))
    assert q["validity"] == 0.0
    assert q["completeness"] == 0.0
    assert q["score"] == 0.0


def test_quality_direct_call_matches_helper():
    event = full_event()
    clean, issues = standardise(event)
    assert quality(clean, issues, count_supplied(event)) == standardise_and_score(event)[1]


def test_quality_issues_list_is_a_copy():
    clean, issues = standardise(full_event())
    q = quality(clean, issues, 12)
    q["issues"].append("x")
    assert "x" not in issues


def test_identifiers_group_uses_either_id():
    one = base(given_name="A", family_name="B", national_id="AB1")
    two = base(given_name="A", family_name="B", loyalty_id="L1")
    none = base(given_name="A", family_name="B")
    q1, q2, q3 = (standardise_and_score(e)[1]["completeness"] for e in (one, two, none))
    assert q1 == q2 == round(3 / 7, 4)
    assert q3 == round(2 / 7, 4)


def test_cached_results_are_not_shared_between_calls():
    event = base(addresses=[addr(postcode="ls11aa", country="GB")],
                 emails=[{"address": "a@example.com"}], phones=[{"number": "07911 123456"}])
    first, _ = standardise(event)
    first["addresses"][0]["line1"] = "changed"
    first["addresses"][0]["verified"] = True
    first["emails"][0]["verified"] = True
    first["phones"][0]["kind"] = "changed"
    second, _ = standardise(event)
    assert second["addresses"][0]["line1"] == "1 High St"
    assert second["addresses"][0]["verified"] is False
    assert second["emails"][0]["verified"] is False
    assert second["phones"][0]["kind"] is None
