"""Match features and blocking keys of one standardised customer record.

Features are the compact, comparison-ready form of a record that the identity
index keeps for each member; blocking keys are the (hashed) values under which
a record can be found as a candidate. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache

import jellyfish

from hub import caches
from hub.lookalike import lookalike


@lru_cache(maxsize=caches.VOCABULARY)
def fold(text: str | None) -> str | None:
    """Lower-case, accent-free, letters and digits only: the form names are compared in."""
    if not text:
        return None
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    kept = "".join(c for c in decomposed if c.isalnum() or c == " ")
    kept = " ".join(kept.split())
    return kept or None


@lru_cache(maxsize=caches.VOCABULARY)
def phonetic(text: str | None) -> str | None:
    if not text:
        return None
    code = jellyfish.metaphone(text.replace(" ", ""))
    return code or None


def _postcode(value: str | None) -> str | None:
    return value.replace(" ", "").upper() if value else None


def features(event: dict) -> dict:
    """Comparison-ready features of a standardised CustomerEvent."""
    addresses = event["addresses"]
    return {
        "rt": event["record_type"],
        "gn": fold(event["given_name"]),
        "mn": fold(event["middle_name"]),
        "fn": fold(event["family_name"]),
        # a birth date that failed validation is still evidence: data quality
        # flags it and the golden record never takes it, but matching compares
        # and blocks on it as the source wrote it (normalised by standardise),
        # so a slip of one key leaves the pair more than names to go on
        "dob": event["birth_date"] or (event.get("invalid_values") or {}).get("birth_date"),
        "sx": event.get("gender"),
        # a look-alike address (hub.lookalike) is no evidence of who this is: no feature, no blocking key
        "em": sorted({e["address"] for e in event["emails"] if not lookalike(e["address"])}),
        "ph": sorted({p["number"] for p in event["phones"]}),
        # street, postcode and town are compared apart, as Splink does: a mistyped
        # or moved street still agrees on the postcode, a mistyped postcode on
        # the town. Households share all three; decide.py guards against that.
        "st": sorted({street for a in addresses if (street := fold(a["line1"]))}),
        "pc": sorted({code for a in addresses if (code := _postcode(a["postcode"]))}),
        "ci": sorted({town for a in addresses if (town := fold(a["city"]))}),
        "nid": event["national_id"],
        "loy": event["loyalty_id"],
        "org": fold(event["organisation_name"]),
    }


def blocking_values(feats: dict) -> list[str]:
    """Plain blocking keys (prefix:value); hashed before they reach the index."""
    keys: list[str] = []
    rt = feats["rt"][0]
    keys.extend(f"e:{email}" for email in feats["em"])
    keys.extend(f"p:{phone}" for phone in feats["ph"])
    if feats["nid"]:
        keys.append(f"n:{feats['nid']}")
    if feats["loy"]:
        keys.append(f"l:{feats['loy']}")
    given, family, dob = feats["gn"], feats["fn"], feats["dob"]
    family_code = phonetic(family)
    postcodes, towns, streets = feats["pc"], feats["ci"], feats["st"]
    if family_code:
        for postcode in postcodes:
            # outward part of the postcode: survives a move within the area and typos in the inward part
            keys.append(f"a:{rt}:{family_code}:{postcode[:-3] or postcode}")
        if given and dob:
            keys.append(f"y:{phonetic(given)}:{family_code}:{dob[:4]}")
    if given and family:
        # sparse records (a till, a phone call) often carry little but a name;
        # sorted, so a record with given and family name swapped lands here too
        first, second = sorted((phonetic(given) or "", family_code or ""))
        keys.append(f"g:{rt}:{first}:{second}")
    if dob and len(dob) == 10:
        # one key per name initial: a typo'd or swapped name still shares the other
        keys.extend(f"d:{dob}:{initial}" for initial in sorted({n[0] for n in (given, family) if n}))
    # (a record's addresses are few: every pairing of its parts is a handful of keys)
    for street in streets:
        keys.extend(f"h:{rt}:{postcode}|{street}" for postcode in postcodes)  # a household at most
        keys.extend(f"s:{rt}:{town}|{street}" for town in towns)  # the household again, postcode mistyped
    for postcode in postcodes:
        # a postcode alone finds records whose names and street were all mistyped
        # (a big postcode soon outgrows max_block_size and stops being used);
        # with the given name's sound it still finds a surname changed by marriage
        keys.append(f"z:{rt}:{postcode}")
        if given:
            keys.append(f"q:{rt}:{phonetic(given)}:{postcode}")
    if feats["org"]:
        keys.append(f"o:{rt}:{phonetic(feats['org'])}")
    return keys


def term_values(feats: dict, comparisons) -> dict[str, str]:
    """Plain term keys (feature -> t:<feature>:<value>) of the values whose
    frequency the identity index counts: those of the comparisons with
    term_frequency. Hashed like blocking keys before they reach the index."""
    return {c.feature: f"t:{c.feature}:{value}" for c in comparisons
            if c.term_frequency and isinstance(value := feats.get(c.feature), str) and value}


def term_keys(secret: bytes, feats: dict, comparisons) -> dict[str, str]:
    """term_values, hashed (hub.matching.frequencies counts them)."""
    return {feature: hash_key(secret, plain) for feature, plain in term_values(feats, comparisons).items()}


def hash_key(secret: bytes, value: str) -> str:
    """Keyed hash of a blocking value: the index never holds plain identifiers.
    BLAKE2's keyed mode is a MAC in itself (no HMAC construction needed)."""
    return hashlib.blake2s(value.encode(), key=secret[:32], digest_size=12).hexdigest()
