"""Standardisation and data-quality scoring of customer events.

Owns turning one raw ``hub.CustomerEvent`` dict into its standardised form
(clean Unicode text, name case, validated e-mail addresses, E.164 phone
numbers, ISO 3166-1 alpha-2 countries, formatted postcodes, partial ISO birth
dates, a small gender vocabulary, compact identifiers) and scoring it into a
``hub.Quality`` record. Pure functions only: no I/O, no Kafka, no Redis, so the
same code runs in stream processors, back-fills and tests.

Issue codes are ``<attribute>.<problem>`` from ``ISSUE_CODES``. They never carry
the offending value, so they are safe to log, count and publish. Problems
``invalid``, ``unknown`` and ``empty`` mean a supplied value was dropped (these
lower validity); ``truncated`` means a value was kept but repaired;
``overflow`` (once per attribute) means an event carried more e-mails,
phones or addresses than ``MAX_VALUES`` and the rest were dropped.

A dropped birth date is still evidence of who the customer is: the record's
``invalid_values`` keeps it (normalised, for matching only; survivorship never
reads it). "In the future" is judged against the event's own time, never the
clock, so standardising an event gives the same answer whenever it runs.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from hub import caches
from hub.lookalike import lookalike
from hub.postcodes import standard_postcode

__all__ = [
    "DROPPED_CODES",
    "birth_date_evidence",
    "ISSUE_CODES",
    "MAX_LEN",
    "MAX_PREFERENCES",
    "MAX_VALUES",
    "count_supplied",
    "normalise_country",
    "quality",
    "standardise",
    "standard_email",
    "standard_identifier",
    "standard_phone",
    "standardise",
    "standardise_and_score",
]

MAX_LEN = 256
MAX_PREFERENCES = 50
# At most this many e-mails, phones and addresses per event: a customer has a
# handful; thousands are an attack or a broken feed, and would grow the golden
# record and the identity index without bound (docs/hostile-input.md). The rest
# are dropped with `<attribute>.overflow`; at most four times as many entries
# are even looked at, so a flood of invalid ones costs bounded time too.
MAX_VALUES = 20

ISSUE_CODES = frozenset({
    "given_name.invalid", "given_name.truncated",
    "middle_name.invalid", "middle_name.truncated",
    "family_name.invalid", "family_name.truncated",
    "organisation_name.invalid", "organisation_name.truncated",
    "birth_date.invalid",
    "gender.unknown", "gender.invalid",
    "national_id.invalid", "national_id.truncated",
    "loyalty_id.invalid", "loyalty_id.truncated",
    "email.invalid", "email.truncated", "email.overflow", "email.lookalike",
    "phone.invalid", "phone.truncated", "phone.overflow",
    "address.invalid", "address.empty", "address.truncated", "address.overflow",
    "country.unknown",
    "postcode.invalid",
    "preferences.invalid", "preferences.truncated",
})
# Codes meaning "a supplied value was thrown away", so quality() needs nothing
# but the issue list. Preferences are not counted as supplied values, so their
# codes do not count against validity either.
DROPPED_CODES = frozenset(
    c for c in ISSUE_CODES
    if c.rpartition(".")[2] in ("invalid", "unknown", "empty") and not c.startswith("preferences."))

_SCALARS = ("given_name", "middle_name", "family_name", "birth_date", "gender",
            "national_id", "loyalty_id", "organisation_name")

# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


_CONTROL_SCAN_RANGES = ((0, 0x3400), (0x4DC0, 0x4E00), (0xA000, 0xAC00), (0xD7A4, 0xD800),
                        (0xF900, 0x20000), (0xE0000, 0xE1000))


def _build_control_table() -> dict[int, Any]:
    # Whitespace controls (tab, newline, NEL...) separate words, so they become
    # spaces; every other control/format/surrogate code point is removed, which
    # also disarms bidi overrides and zero-width tricks in names.
    # Scanning all 1.1M code points costs ~150 ms at import; the skipped
    # blocks (CJK, Hangul, private use, planes 2-3 and 15-16) hold no Cc/Cf.
    table: dict[int, Any] = dict.fromkeys(range(0xD800, 0xE000))  # lone surrogates
    for lo, hi in _CONTROL_SCAN_RANGES:
        for cp in range(lo, hi):
            ch = chr(cp)
            if unicodedata.category(ch) in ("Cc", "Cf"):
                table[cp] = " " if ch.isspace() else None
    return table


_CONTROL_TABLE = _build_control_table()


def _clean(text: str) -> str | None:
    """NFKC, controls removed, whitespace collapsed; '' becomes None."""
    # Printable ASCII is already NFKC and control-free: skip the slow path.
    if not (text.isascii() and text.isprintable()):
        text = unicodedata.normalize("NFKC", text.translate(_CONTROL_TABLE))
    return " ".join(text.split()) or None


def _as_text(value: Any) -> str | None:
    """Coerce JSON-ish scalars to str; anything structured is unusable (None)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def _is_blank(value: Any) -> bool:
    # Judged after cleaning, so a lone zero-width space counts as not supplied
    # rather than as a supplied value that silently vanished.
    if value is None:
        return True
    if value.__class__ is str:
        if value.isascii() and value.isprintable():
            return value.isspace() or not value
        return _clean(value) is None
    return False


def _text(value: Any, attr: str, issues: list[str]) -> str | None:
    """Clean one free-text value, capping it at MAX_LEN (with an issue)."""
    if value is None:
        return None
    if value.__class__ is not str:
        value = _as_text(value)
        if value is None:
            issues.append(attr + ".invalid")
            return None
    text = _clean(value)
    if text is not None and len(text) > MAX_LEN:
        issues.append(attr + ".truncated")
        text = text[:MAX_LEN].rstrip()
    return text


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

_TITLE_RE = re.compile(
    r"^(?:(?:mr|mrs|ms|miss|mx|dr|prof|sir|dame|rev|revd|herr|frau|mme|mlle)"
    r"(?:\.\s*|\s+))+(?=\S)",
    re.IGNORECASE,
)
_TITLE_ONLY_RE = re.compile(
    r"^(?:mr|mrs|ms|miss|mx|dr|prof|sir|dame|rev|revd|herr|frau|mme|mlle)\.?$", re.IGNORECASE)
_ASCII_LETTER_RE = re.compile(r"[A-Za-z]")


def _has_letter(text: str) -> bool:
    if text.isascii():
        return _ASCII_LETTER_RE.search(text) is not None
    return any(ch.isalpha() for ch in text)


# Single-case text (all capitals, as many systems export, or all lower case)
# is re-cased word by word; mixed case ("McDonald", "van Dijk") is the
# customer's own spelling and survives. Words are split at spaces and
# hyphens; a letter after a dot starts a word too (J.R., St.), and after an
# apostrophe only behind a single letter (O'Brien, D'Arcy, but King's).
_WORD_SPLIT_RE = re.compile(r"([\s\-\u2010\u2011]+)")
_AFTER_DOT_RE = re.compile(r"(?<=\.)(\w)")
_ELIDED_RE = re.compile(r"^(\w)(['\u2019])(\w)")
# Surname particles. Germanic ones are lower case before the name they belong
# to wherever they stand (Pieter van der Berg, van der Berg); Romance ones
# inside a name but not at its start (Maria de Lourdes, De Luca, Le Pen).
_GERMANIC_PARTICLES = frozenset({"van", "von", "der", "den", "dem", "ter", "ten", "te", "zu", "zum", "zur", "vom",
                                 "het", "op", "aan", "in't", "'t"})
_ROMANCE_PARTICLES = frozenset({"de", "da", "di", "du", "des", "del", "della", "dos", "das", "do", "la", "le", "y",
                                "e", "dei", "degli"})
# Small words inside place names (Newcastle upon Tyne, Stoke-on-Trent, Frankfurt am Main, Isle of Wight)
_PLACE_WORDS = frozenset({"upon", "on", "am", "an", "der", "die", "das", "den", "dem", "de", "du", "des", "la",
                          "le", "les", "sur", "sous", "en", "in", "im", "bei", "of", "the", "and", "y", "del",
                          "di", "da", "vor", "ob", "unter", "ad", "aan", "op", "lès", "et"})
_ROMAN_SUFFIXES = frozenset({"ii", "iii", "iv"})
# Mac is a prefix (MacDonald, MacLeod) except in these names, whose "mac" is not Gaelic
_NOT_MAC = frozenset({"macedo", "macevicius", "machado", "machar", "machin", "machlin", "macias", "maciulis",
                      "mackie", "mackle", "macklin", "mackmin", "macquarie", "macomber", "macin", "mackintosh",
                      "macken", "machen", "machiel", "maciol", "mackell", "macklem", "mackrell", "maclin", "mackey",
                      "mackley", "machell", "machon", "macey", "maciel", "macario", "macaluso", "macari", "macek",
                      "maceda", "machacek", "mackay", "macon", "macri", "macrae"})


def _capitalised(word: str, prefixes: bool) -> str:
    """One lower-case word with its first letter (and those after a dot, and after O'/D') in capitals;
    with `prefixes`, Mc and Mac are prefixes too."""
    if not word:
        return word
    elided = _ELIDED_RE.match(word)
    if elided:
        return elided.group(1).upper() + elided.group(2) + _capitalised(word[2:], prefixes)
    word = _AFTER_DOT_RE.sub(lambda m: m.group(1).upper(), word[0].upper() + word[1:])
    if prefixes and len(word) > 3 and word.startswith("Mc"):
        return "Mc" + word[2].upper() + word[3:]
    if prefixes and len(word) > 5 and word.startswith("Mac") and word.lower() not in _NOT_MAC:
        return "Mac" + word[3].upper() + word[4:]
    return word


def _recase(text: str, lower_anywhere: frozenset, lower_inside: frozenset, prefixes: bool) -> str:
    """Single-case text re-cased word by word; other text as it is. Words in `lower_anywhere` are lower
    case before another word, words in `lower_inside` when neither first nor last."""
    if not (text.isupper() or text.islower()):
        return text
    parts = _WORD_SPLIT_RE.split(text.lower())  # words at even positions, separators between them
    last = len(parts) - 1
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part)
        elif i < last and (part in lower_anywhere or (i > 0 and part in lower_inside)):
            out.append(part)
        elif prefixes and i == last and i > 0 and part in _ROMAN_SUFFIXES:
            out.append(part.upper())
        else:
            out.append(_capitalised(part, prefixes))
    return "".join(out)


def _name_case(text: str) -> str:
    return _recase(text, _GERMANIC_PARTICLES, _ROMANCE_PARTICLES, prefixes=True)


def place_case(text: str) -> str:
    """A town as people write it: all-capital exports re-cased (NEWCASTLE UPON TYNE: Newcastle upon Tyne)."""
    return _recase(text, frozenset(), _PLACE_WORDS, prefixes=False)


# First letters of every title, so most names skip the title regexes.
_TITLE_INITIALS = frozenset("mMdDpPsSrRhHfF")


@lru_cache(maxsize=caches.VOCABULARY)
def _name_form(text: str, strip_title: bool) -> str | None:
    """Cleaned name -> standard form, or None if it is not a name."""
    if strip_title and text[0] in _TITLE_INITIALS:
        if _TITLE_ONLY_RE.match(text):
            return None
        text = _TITLE_RE.sub("", text, count=1)
    if not _has_letter(text):
        return None
    return _name_case(text)


def _person_name(value: Any, attr: str, issues: list[str], strip_title: bool) -> str | None:
    text = _text(value, attr, issues)
    if text is None:
        return None
    name = _name_form(text, strip_title)
    if name is None:
        issues.append(attr + ".invalid")
    return name


def _organisation_name(value: Any, issues: list[str]) -> str | None:
    text = _text(value, "organisation_name", issues)
    if text is None:
        return None
    # Digits are legitimate here ("3M", "1&1"); punctuation alone is not.
    if not any(ch.isalnum() for ch in text):
        issues.append("organisation_name.invalid")
        return None
    return text


# --------------------------------------------------------------------------
# Identifiers, gender, birth date
# --------------------------------------------------------------------------

_ID_SEPARATORS_RE = re.compile(r"[\s.\-\u2010-\u2015\u2212]+")


def _identifier(value: Any, attr: str, issues: list[str]) -> str | None:
    text = _text(value, attr, issues)
    if text is None:
        return None
    text = _ID_SEPARATORS_RE.sub("", text).upper()
    if not text:
        issues.append(attr + ".invalid")
        return None
    return text


_GENDERS: dict[str, str | None] = {
    **dict.fromkeys(("f", "female", "w", "woman", "frau", "weiblich", "femme"), "F"),
    **dict.fromkeys(("m", "male", "man", "herr", "männlich", "mannlich", "homme"), "M"),
    **dict.fromkeys(("x", "other", "non-binary", "nonbinary", "non binary", "diverse",
                     "divers", "d", "nb"), "X"),
    **dict.fromkeys(("u", "unknown", "not specified", "unspecified", "not known",
                     "prefer not to say", "n/a", "na", "none", "null", "-", "?"), None),
}


def _gender(value: Any, issues: list[str]) -> str | None:
    text = _text(value, "gender", issues)
    if text is None:
        return None
    key = text.casefold()
    if key in _GENDERS:
        return _GENDERS[key]
    issues.append("gender.unknown")
    return None


_YMD_RE = re.compile(r"^(\d{4})(?:[-/.](\d{1,2})(?:[-/.](\d{1,2}))?)?$")
_DMY_RE = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$")
_COMPACT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO_DATETIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ]\d")


@lru_cache(maxsize=caches.VOCABULARY)
def _parse_birth_date(text: str) -> str | None:
    """Syntax and calendar only; the caller judges "in the future" against
    the event's own day, which this cache must not know."""
    m = _ISO_DATETIME_RE.match(text) or _YMD_RE.match(text) or _COMPACT_RE.match(text)
    if m:
        year, month, day = m.group(1), m.group(2), m.group(3)
    else:
        m = _DMY_RE.match(text)
        if not m:
            return None
        day, month, year = m.group(1), m.group(2), m.group(3)
    y = int(year)
    if y < 1900:
        return None
    if month is None:
        return f"{y:04d}"
    mo = int(month)
    if not 1 <= mo <= 12:
        return None
    if day is None:
        return f"{y:04d}-{mo:02d}"
    try:
        return _dt.date(y, mo, int(day)).isoformat()
    except ValueError:  # 1999-02-30 and friends
        return None


@lru_cache(maxsize=4096)
def _day_of(event_time_ms: int) -> str:
    return _dt.datetime.fromtimestamp(event_time_ms / 1000, _dt.timezone.utc).date().isoformat()


def _event_day(event: dict) -> str | None:
    """The UTC day the source says the event happened: what "in the future"
    is judged against, so the same event standardises the same way whenever
    it is read (a replay next year keeps this year's answer)."""
    at = event.get("event_time")
    if type(at) is not int:
        return None
    try:
        return _day_of(at)
    except (OverflowError, OSError, ValueError):
        return None


# Letters typed for the digits they look like: 19O4 is 1904, l985 is 1985.
_LOOKALIKES = str.maketrans({"o": "0", "O": "0", "l": "1", "I": "1", "i": "1"})
_DATE_PARTS_RE = re.compile(r"[^0-9]+")
_EVIDENCE_MAX = 16


@lru_cache(maxsize=caches.VOCABULARY)
def birth_date_evidence(text: str) -> str | None:
    """A birth date that failed validation, as matching keeps it: look-alike
    letters read as digits, separators unified, D/M/Y and YYYYMMDD laid out as
    Y-M-D, and nothing checked against the calendar (1960-16-03 and
    1060-03-12 stay what they are: one key away from the real date). A value
    with no non-zero digit (0000-00-00, a placeholder) is no evidence: None."""
    if _ISO_DATETIME_RE.match(text):
        text = text[:10]
    parts = [p for p in _DATE_PARTS_RE.split(text.translate(_LOOKALIKES)) if p]
    if len(parts) == 1 and len(parts[0]) == 8:
        parts = [parts[0][:4], parts[0][4:6], parts[0][6:]]
    elif len(parts) == 3 and len(parts[2]) == 4 and len(parts[0]) <= 2:
        parts.reverse()
    if 2 <= len(parts) <= 3 and len(parts[0]) == 4:
        parts = [parts[0]] + [p.zfill(2) for p in parts[1:]]
    evidence = "-".join(parts)[:_EVIDENCE_MAX]
    return evidence if evidence.strip("-0") else None


def _birth_date(value: Any, issues: list[str], day: str | None, invalid: dict[str, str]) -> str | None:
    text = _text(value, "birth_date", issues)
    if text is None:
        return None
    result = _parse_birth_date(text)
    # ISO strings of equal precision compare like dates: "1985-04" vs "2025-06".
    if result is not None and day is not None and result > day[:len(result)]:
        result = None
    if result is None:
        issues.append("birth_date.invalid")
        evidence = birth_date_evidence(text)
        if evidence:
            invalid["birth_date"] = evidence
    return result


# --------------------------------------------------------------------------
# Countries and postcodes
# --------------------------------------------------------------------------

# ISO 3166-1 alpha-2 / alpha-3 pairs (plus XK, Kosovo, which is in wide use).
_ISO_PAIRS = """
AD AND AE ARE AF AFG AG ATG AI AIA AL ALB AM ARM AO AGO AQ ATA AR ARG AS ASM AT AUT AU AUS AW ABW AX ALA AZ AZE
BA BIH BB BRB BD BGD BE BEL BF BFA BG BGR BH BHR BI BDI BJ BEN BL BLM BM BMU BN BRN BO BOL BQ BES BR BRA BS BHS
BT BTN BV BVT BW BWA BY BLR BZ BLZ CA CAN CC CCK CD COD CF CAF CG COG CH CHE CI CIV CK COK CL CHL CM CMR CN CHN
CO COL CR CRI CU CUB CV CPV CW CUW CX CXR CY CYP CZ CZE DE DEU DJ DJI DK DNK DM DMA DO DOM DZ DZA EC ECU EE EST
EG EGY EH ESH ER ERI ES ESP ET ETH FI FIN FJ FJI FK FLK FM FSM FO FRO FR FRA GA GAB GB GBR GD GRD GE GEO GF GUF
GG GGY GH GHA GI GIB GL GRL GM GMB GN GIN GP GLP GQ GNQ GR GRC GS SGS GT GTM GU GUM GW GNB GY GUY HK HKG HM HMD
HN HND HR HRV HT HTI HU HUN ID IDN IE IRL IL ISR IM IMN IN IND IO IOT IQ IRQ IR IRN IS ISL IT ITA JE JEY JM JAM
JO JOR JP JPN KE KEN KG KGZ KH KHM KI KIR KM COM KN KNA KP PRK KR KOR KW KWT KY CYM KZ KAZ LA LAO LB LBN LC LCA
LI LIE LK LKA LR LBR LS LSO LT LTU LU LUX LV LVA LY LBY MA MAR MC MCO MD MDA ME MNE MF MAF MG MDG MH MHL MK MKD
ML MLI MM MMR MN MNG MO MAC MP MNP MQ MTQ MR MRT MS MSR MT MLT MU MUS MV MDV MW MWI MX MEX MY MYS MZ MOZ NA NAM
NC NCL NE NER NF NFK NG NGA NI NIC NL NLD NO NOR NP NPL NR NRU NU NIU NZ NZL OM OMN PA PAN PE PER PF PYF PG PNG
PH PHL PK PAK PL POL PM SPM PN PCN PR PRI PS PSE PT PRT PW PLW PY PRY QA QAT RE REU RO ROU RS SRB RU RUS RW RWA
SA SAU SB SLB SC SYC SD SDN SE SWE SG SGP SH SHN SI SVN SJ SJM SK SVK SL SLE SM SMR SN SEN SO SOM SR SUR SS SSD
ST STP SV SLV SX SXM SY SYR SZ SWZ TC TCA TD TCD TF ATF TG TGO TH THA TJ TJK TK TKL TL TLS TM TKM TN TUN TO TON
TR TUR TT TTO TV TUV TW TWN TZ TZA UA UKR UG UGA UM UMI US USA UY URY UZ UZB VA VAT VC VCT VE VEN VG VGB VI VIR
VN VNM VU VUT WF WLF WS WSM XK XKX YE YEM YT MYT ZA ZAF ZM ZMB ZW ZWE
""".split()

# Names as customers and source systems actually type them, keyed in the
# folded form produced by _country_key (lower case, no accents or dots).
_COUNTRY_NAMES = {
    "GB": ("uk", "united kingdom", "great britain", "britain", "england", "scotland", "wales",
           "northern ireland", "united kingdom of great britain and northern ireland"),
    "US": ("united states", "united states of america", "america", "us of a"),
    "DE": ("germany", "deutschland", "federal republic of germany", "allemagne"),
    "FR": ("france", "frankreich"),
    "ES": ("spain", "espana", "spanien"),
    "IT": ("italy", "italia", "italien"),
    "NL": ("netherlands", "the netherlands", "holland", "nederland", "niederlande"),
    "BE": ("belgium", "belgique", "belgie", "belgien"),
    "LU": ("luxembourg", "luxemburg"),
    "IE": ("ireland", "republic of ireland", "eire", "irland"),
    "PT": ("portugal",),
    "SE": ("sweden", "sverige", "schweden"),
    "NO": ("norway", "norge", "norwegen"),
    "DK": ("denmark", "danmark", "danemark"),
    "FI": ("finland", "suomi", "finnland"),
    "IS": ("iceland",),
    "PL": ("poland", "polska", "polen"),
    "AT": ("austria", "osterreich", "oesterreich"),
    "CH": ("switzerland", "schweiz", "suisse", "svizzera"),
    "CZ": ("czech republic", "czechia", "ceska republika", "tschechien"),
    "SK": ("slovakia",),
    "HU": ("hungary", "magyarorszag"),
    "RO": ("romania",),
    "BG": ("bulgaria",),
    "GR": ("greece", "hellas"),
    "HR": ("croatia", "hrvatska"),
    "SI": ("slovenia",),
    "EE": ("estonia",),
    "LV": ("latvia",),
    "LT": ("lithuania",),
    "CY": ("cyprus",),
    "MT": ("malta",),
    "UA": ("ukraine",),
    "RU": ("russia", "russian federation"),
    "TR": ("turkey", "turkiye"),
    "IL": ("israel",),
    "AE": ("united arab emirates", "uae"),
    "SA": ("saudi arabia",),
    "EG": ("egypt",),
    "NG": ("nigeria",),
    "KE": ("kenya",),
    "ZA": ("south africa",),
    "CA": ("canada",),
    "MX": ("mexico",),
    "BR": ("brazil", "brasil"),
    "AR": ("argentina",),
    "CL": ("chile",),
    "CO": ("colombia",),
    "PE": ("peru",),
    "AU": ("australia",),
    "NZ": ("new zealand", "aotearoa"),
    "IN": ("india", "bharat"),
    "PK": ("pakistan",),
    "BD": ("bangladesh",),
    "LK": ("sri lanka",),
    "CN": ("china", "people's republic of china", "peoples republic of china", "prc"),
    "HK": ("hong kong",),
    "TW": ("taiwan",),
    "JP": ("japan", "nippon"),
    "KR": ("south korea", "korea", "republic of korea"),
    "SG": ("singapore",),
    "MY": ("malaysia",),
    "TH": ("thailand",),
    "VN": ("vietnam", "viet nam"),
    "PH": ("philippines",),
    "ID": ("indonesia",),
}


def _build_country_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for a2, a3 in zip(_ISO_PAIRS[::2], _ISO_PAIRS[1::2]):
        table[a2.lower()] = a2
        table[a3.lower()] = a2
    for code, names in _COUNTRY_NAMES.items():
        for name in names:
            table[name] = code
    return table


_COUNTRIES = _build_country_table()
_COUNTRY_STRIP_RE = re.compile(r"[.,()]")


def _country_key(text: str) -> str:
    # Fold accents and punctuation so "Österreich", "U.S.A." and "Espa\u00f1a" hit.
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text)
                       if not unicodedata.combining(ch))
    text = _COUNTRY_STRIP_RE.sub("", text.casefold()).replace("&", "and")
    text = " ".join(text.split())
    if text.startswith("the "):
        text = text[4:]
    return text


@lru_cache(maxsize=4096)
def normalise_country(text: str) -> str | None:
    """ISO2/ISO3 code (any case) or common English/native name -> ISO2, else None."""
    key = _country_key(text)
    return _COUNTRIES.get(key) or _COUNTRIES.get("the " + key)


def _postcode(text: str | None, country: str | None, issues: list[str]) -> tuple[str | None, str | None]:
    """(postcode in its country's form, region its prefix named): hub.postcodes."""
    if text is None:
        return None, None
    postcode, region = standard_postcode(text, country)
    if postcode is None:
        issues.append("postcode.invalid")
    return postcode, region


# --------------------------------------------------------------------------
# E-mail, phone
# --------------------------------------------------------------------------

# Rejects obvious garbage before paying for email_validator: one @, no
# whitespace, a dot somewhere after the @.
_EMAIL_PRECHECK_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@lru_cache(maxsize=caches.CUSTOMER_VALUES)
def _validate_email(address: str) -> str | None:
    if not _EMAIL_PRECHECK_RE.match(address):
        return None
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized.lower()


_PHONE_NOISE_RE = re.compile(r"[\s\-.()/\u2010-\u2015]+")
_PHONE_DIGITS_RE = re.compile(r"\d")
_E164 = phonenumbers.PhoneNumberFormat.E164
_PHONE_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


@lru_cache(maxsize=caches.CUSTOMER_VALUES)
def _parse_phone(number: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, _E164)


@lru_cache(maxsize=caches.CUSTOMER_VALUES)
def _phone_e164(text: str, region: str) -> str | None:
    if not _PHONE_DIGITS_RE.search(text):
        return None
    # Separators stripped so "020 7946 0958" and "020-7946-0958" share one
    # (expensive) parse.
    return _parse_phone(_PHONE_NOISE_RE.sub("", text), region)


def _kind(value: Any, parent: str, issues: list[str]) -> str | None:
    text = _text(value, parent, issues)
    return text.lower() if text is not None else None


def _bounded(items: Any, parent: str, issues: list[str]) -> list:
    """The entries worth looking at; an overflow is reported once."""
    entries = _as_list(items)
    if len(entries) > MAX_VALUES:
        issues.append(f"{parent}.overflow")
        return entries[:4 * MAX_VALUES]
    return entries


def _full(out: list, parent: str, issues: list[str]) -> bool:
    if len(out) < MAX_VALUES:
        return False
    if f"{parent}.overflow" not in issues:
        issues.append(f"{parent}.overflow")
    return True


def _emails(items: Any, issues: list[str]) -> list[dict]:
    out: list[dict] = []
    seen: dict[str, dict] = {}
    for item in _bounded(items, "email", issues):
        if isinstance(item, str):
            item = {"address": item}
        elif not isinstance(item, dict):
            issues.append("email.invalid")
            continue
        raw = _as_text(item.get("address"))
        text = _clean(raw) if raw is not None else None
        # Never truncate an address: a shortened one could be someone else's.
        email = _validate_email(text.lower()) if text and len(text) <= MAX_LEN else None
        if email is None:
            issues.append("email.invalid")
            continue
        if email not in seen and _full(out, "email", issues):
            continue
        if lookalike(email):  # kept as sent, but it is no evidence of who this is (hub.lookalike)
            issues.append("email.lookalike")
        _merge_contact(out, seen, email, "address", item, "email", issues)
    return out


def _phones(items: Any, region: str, issues: list[str]) -> list[dict]:
    out: list[dict] = []
    seen: dict[str, dict] = {}
    for item in _bounded(items, "phone", issues):
        if isinstance(item, (str, int)) and not isinstance(item, bool):
            item = {"number": str(item)}
        elif not isinstance(item, dict):
            issues.append("phone.invalid")
            continue
        raw = _as_text(item.get("number"))
        text = _clean(raw) if raw is not None else None
        number = _phone_e164(text, region) if text and len(text) <= MAX_LEN else None
        if number is None:
            issues.append("phone.invalid")
            continue
        if number not in seen and _full(out, "phone", issues):
            continue
        _merge_contact(out, seen, number, "number", item, "phone", issues)
    return out


def _merge_contact(out: list[dict], seen: dict[str, dict], value: str, field: str,
                   item: dict, parent: str, issues: list[str]) -> None:
    verified = bool(item.get("verified", False))
    kind = _kind(item.get("kind"), parent, issues)
    existing = seen.get(value)
    if existing is None:
        entry = {field: value, "kind": kind, "verified": verified}
        seen[value] = entry
        out.append(entry)
        return
    # A duplicate is not an error, but its verification still counts.
    existing["verified"] = existing["verified"] or verified
    if existing["kind"] is None:
        existing["kind"] = kind


def _as_list(items: Any) -> list:
    if items is None:
        return []
    if isinstance(items, (list, tuple)):
        return list(items)
    return [items]


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------

_ADDRESS_FIELDS = ("line1", "line2", "city", "region", "postcode", "country", "kind")


def _address_form(raw: tuple) -> tuple[tuple | None, tuple[str, ...]]:
    """Raw address fields -> (standardised fields or None if empty, issues)."""
    issues: list[str] = []
    line1, line2, city, region = (_text(v, "address", issues) for v in raw[:4])
    if city is not None:
        city = place_case(city)
    country = None
    raw_country = _text(raw[5], "address", issues)
    if raw_country is not None:
        country = normalise_country(raw_country)
        if country is None:
            issues.append("country.unknown")
    postcode, named_region = _postcode(_text(raw[4], "address", issues), country, issues)
    if region is None:  # "OR 97214", "QC G1R 3P1": the region written in front of the postcode
        region = named_region
    if line1 is None and city is None and postcode is None:
        # The whole address goes; its sub-issues would double-count it.
        return None, ("address.empty",)
    kind = _kind(raw[6], "address", issues)
    return (line1, line2, city, region, postcode, country, kind), tuple(issues)


# Addresses repeat across a customer's updates; raw strings are the cache key.
_address_form_cached = lru_cache(maxsize=caches.CUSTOMER_VALUES)(_address_form)


def _addresses(items: Any, issues: list[str]) -> list[dict]:
    out: list[dict] = []
    seen: dict[tuple, dict] = {}
    for item in _bounded(items, "address", issues):
        if not isinstance(item, dict):
            issues.append("address.invalid")
            continue
        raw = tuple(item.get(f) for f in _ADDRESS_FIELDS)
        try:
            fields, found = _address_form_cached(raw)
        except TypeError:  # an unhashable field value: it will be reported invalid
            fields, found = _address_form(raw)
        issues.extend(found)
        if fields is None:
            continue
        verified = bool(item.get("verified", False))
        key = tuple((f or "").casefold() for f in fields[:4]) + fields[4:6]
        existing = seen.get(key)
        if existing is None and _full(out, "address", issues):
            continue
        if existing is None:
            entry = dict(zip(_ADDRESS_FIELDS, fields))
            entry["verified"] = verified
            seen[key] = entry
            out.append(entry)
        else:
            existing["verified"] = existing["verified"] or verified
            if existing["kind"] is None:
                existing["kind"] = fields[6]
    return out


# --------------------------------------------------------------------------
# Preferences
# --------------------------------------------------------------------------


def _preferences(prefs: Any, issues: list[str]) -> dict[str, str]:
    if not prefs:
        return {}
    if not isinstance(prefs, dict):
        issues.append("preferences.invalid")
        return {}
    out: dict[str, str] = {}
    for key, value in prefs.items():
        k = _text(key, "preferences", issues)
        v = _text(value, "preferences", issues)
        if k is None or v is None or k in out:
            continue
        if len(out) >= MAX_PREFERENCES:
            issues.append("preferences.truncated")
            break
        out[k] = v
    return out


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def standardise(event: dict, *, default_region: str = "GB") -> tuple[dict, list[str]]:
    """Return a NEW event dict (input not mutated) with every value standardised,
    and a list of issue codes (see ISSUE_CODES) for values repaired or dropped.

    Phone numbers without a country code are read in the region of the first
    surviving address's country, else ``default_region``.
    """
    issues: list[str] = []
    out = dict(event)  # unknown keys and source/op/event_time/record_type pass through

    out["given_name"] = _person_name(event.get("given_name"), "given_name", issues, True)
    out["middle_name"] = _person_name(event.get("middle_name"), "middle_name", issues, False)
    out["family_name"] = _person_name(event.get("family_name"), "family_name", issues, False)
    invalid: dict[str, str] = {}
    out["birth_date"] = _birth_date(event.get("birth_date"), issues, _event_day(event), invalid)
    out["gender"] = _gender(event.get("gender"), issues)

    out["emails"] = _emails(event.get("emails"), issues)
    addresses = _addresses(event.get("addresses"), issues)
    region = next((a["country"] for a in addresses if a["country"]), None)
    if region not in _PHONE_REGIONS:
        region = default_region
    out["phones"] = _phones(event.get("phones"), region, issues)
    out["addresses"] = addresses

    out["national_id"] = _identifier(event.get("national_id"), "national_id", issues)
    out["loyalty_id"] = _identifier(event.get("loyalty_id"), "loyalty_id", issues)
    out["organisation_name"] = _organisation_name(event.get("organisation_name"), issues)
    out["preferences"] = _preferences(event.get("preferences"), issues)
    out["consents"] = list(event.get("consents") or ())
    # set here whatever a source sent: values that failed validation, for matching only
    out["invalid_values"] = invalid
    return out, issues


def count_supplied(event: dict) -> int:
    """Values the source supplied (before standardising): one per non-blank
    scalar attribute and one per e-mail, phone and address entry."""
    n = sum(1 for attr in _SCALARS if not _is_blank(event.get(attr)))
    for attr in ("emails", "phones", "addresses"):
        items = event.get(attr)
        if items is not None:
            n += len(items) if isinstance(items, (list, tuple)) else 1
    return n


_PERSON_GROUPS = 7
_ORG_GROUPS = 4


def quality(event: dict, issues: list[str], supplied_count: int) -> dict:
    """``hub.Quality`` for a *standardised* event: completeness over the key
    attribute groups for its record_type, validity = share of the
    ``supplied_count`` values not dropped (per the issue codes), and
    score = 0.6 * completeness + 0.4 * validity."""
    has_contact = (bool(event.get("emails")) + bool(event.get("phones"))
                   + bool(event.get("addresses")))
    if event.get("record_type") == "organisation":
        present = (event.get("organisation_name") is not None) + has_contact
        completeness = present / _ORG_GROUPS
    else:
        present = ((event.get("given_name") is not None)
                   + (event.get("family_name") is not None)
                   + (event.get("birth_date") is not None)
                   + has_contact
                   + (event.get("national_id") is not None or event.get("loyalty_id") is not None))
        completeness = present / _PERSON_GROUPS
    if supplied_count > 0:
        dropped = sum(1 for code in issues if code in DROPPED_CODES)
        validity = max(0.0, (supplied_count - dropped) / supplied_count)
    else:
        validity = 1.0
    completeness = round(completeness, 4)
    validity = round(validity, 4)
    return {
        "completeness": completeness,
        "validity": validity,
        "score": round(0.6 * completeness + 0.4 * validity, 4),
        "issues": list(issues),
    }


def standardise_and_score(event: dict, *, default_region: str = "GB") -> tuple[dict, dict]:
    """standardise() then quality(): (standardised event, hub.Quality dict)."""
    clean, issues = standardise(event, default_region=default_region)
    return clean, quality(clean, issues, count_supplied(event))


# One value at a time, exactly as in a record: lookups standardise a query the
# way ingest standardised what it is compared with.


def standard_email(value: str) -> str | None:
    emails = _emails([value], [])
    return emails[0]["address"] if emails else None


def standard_phone(value: str, region: str = "GB") -> str | None:
    phones = _phones([value], region if region in _PHONE_REGIONS else "GB", [])
    return phones[0]["number"] if phones else None


def standard_identifier(value: str) -> str | None:
    return _identifier(value, "identifier", [])
