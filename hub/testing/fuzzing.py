"""Hostile raw events, deterministically generated: the fuzz corpus of the
tests and benchmarks.

`hostile_events(n, seed)` yields (topic, key, value bytes) mixing valid
customer events with malformed Avro, wrong or unknown schema ids, truncated
bytes, huge strings, deep nesting, invalid UTF-8, control characters, emoji
and right-to-left text, injection strings and impossible dates. The same
seed gives the same stream, so a failure found in CI can be replayed.
Property-based tests (hypothesis) use the same building blocks.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator

import orjson

from hub.schemas import CUSTOMER_EVENT, codec

SOURCES = ("crm", "pos", "ecommerce", "contact_center")

NASTY_TEXT = (
    "Robert'); DROP TABLE customers;--", "<script>alert(1)</script>", "${jndi:ldap://x/a}", "{{7*7}}",
    "../../etc/passwd", "' OR '1'='1", "\u202eevil\u202c", "عبد الله", "שָׁלוֹם", "😀🎉👩‍👩‍👧", "Zoë\u0301",
    "a\x00b", "\x1b[31mred\x1b[0m", "\ufeffBOM", "\ud7ff\ue000", "ﷺ", "𝕬𝖓𝖓𝖆", "   ", "", "null",
    "\u200b\u200d", "O'Brien-Smith", "Ἀθῆναι", "李小龍", "x" * 5000,
)
NASTY_DATES = ("0000-00-00", "1980-02-30", "9999-12-31", "1980-13-01", "-001-01-01", "1980-1-1", "19800203",
               "2026-11-24T25:61:00Z", "yesterday", "", "1900-01-01", "1980-02")
NASTY_TIMES = (0, -1, 2**63 - 1, -(2**63), "0000-00-00", "2026-02-30T00:00:00Z", 1.5, None, "NaN", True)


def _text(r: random.Random) -> str:
    pick = r.random()
    if pick < 0.5:
        return r.choice(NASTY_TEXT)
    if pick < 0.8:
        return "".join(chr(r.choice((r.randrange(0x20), r.randrange(0x20, 0x2FFF), r.randrange(0x1F300, 0x1FAFF))))
                       for _ in range(r.randrange(1, 40)))
    return r.choice(NASTY_TEXT) + r.choice(NASTY_TEXT)


def valid_event(r: random.Random, source: str, source_id: str, now_ms: int) -> dict:
    """A well-formed CustomerEvent whose text fields are hostile (it must be stored safely)."""
    return {
        "source": source, "source_id": source_id, "event_time": now_ms - r.randrange(1, 10**9),
        "given_name": _text(r), "family_name": _text(r), "middle_name": r.choice((None, _text(r))),
        "birth_date": r.choice(NASTY_DATES), "gender": r.choice((None, "f", "M", "x", _text(r))),
        "emails": [{"address": r.choice(("a@b.co", _text(r) + "@example.com", _text(r), "x@" + "y" * 300 + ".com"))}],
        "phones": [{"number": r.choice(("07911 123456", "+44 20 7946 0000", _text(r), "+" + "9" * 40))}],
        "addresses": [{"line1": _text(r), "city": _text(r), "postcode": r.choice(("LS1 4AB", _text(r))),
                       "country": r.choice(("GB", "ZZ", "", _text(r)[:10]))}],
        "national_id": r.choice((None, _text(r)[:30])), "loyalty_id": r.choice((None, _text(r)[:30])),
    }


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hostile_payload(r: random.Random, source: str, source_id: str, now_ms: int) -> tuple[bytes, str]:
    """One hostile payload for raw.<source> and the kind of hostility (for reports)."""
    avro = codec(CUSTOMER_EVENT)
    base = valid_event(r, source, source_id, now_ms)
    kind = r.choice(("bytes", "truncated", "unknown_id", "wrong_id", "bitflip", "json_huge", "json_deep",
                     "bad_utf8", "json_types", "json_dates", "json_array", "empty", "wrong_source", "avro_garbage"))
    if kind == "bytes":
        return r.randbytes(r.randrange(1, 200)), kind
    if kind == "truncated":
        full = avro.encode(base)
        return full[:r.randrange(1, len(full))], kind
    if kind == "unknown_id":
        return b"\x00" + struct.pack(">I", r.choice((0, 999_999, 2**32 - 1))) + avro.encode(base)[5:], kind
    if kind == "wrong_id":
        # a real id, of another schema: the bytes will not read as a customer event
        from hub.schemas import registry_ids
        ids = sorted(registry_ids().values())
        return b"\x00" + struct.pack(">I", r.choice(ids)) + avro.encode(base)[5:], kind
    if kind == "bitflip":
        data = bytearray(avro.encode(base))
        for _ in range(r.randrange(1, 6)):
            data[r.randrange(5, len(data))] ^= 1 << r.randrange(8)
        return bytes(data), kind
    if kind == "json_huge":
        base["given_name"] = "A" * r.choice((10_000, 60_000, 200_000))
        return orjson.dumps(base), kind
    if kind == "json_deep":
        return _deep(r.choice((100, 1000, 5000))), kind
    if kind == "bad_utf8":
        return orjson.dumps(base).replace(b'"given_name":"', b'"given_name":"\xff\xfe\xc3', 1), kind
    if kind == "json_types":
        base[r.choice(("given_name", "emails", "phones", "addresses", "source_id", "event_time"))] = r.choice(
            ({"x": [1]}, [[[]]], 12, -1.5e308, True, "x", None))
        return orjson.dumps(base), kind
    if kind == "json_dates":
        base["event_time"] = r.choice(NASTY_TIMES)
        return orjson.dumps(base, option=orjson.OPT_PASSTHROUGH_DATETIME), kind
    if kind == "json_array":
        return orjson.dumps([base]), kind
    if kind == "empty":
        return b"", kind
    if kind == "wrong_source":
        base["source"] = "someone_else"
        return orjson.dumps(base), kind
    return b"\x00" + r.randbytes(r.randrange(0, 40)), kind


def hostile_events(n: int, seed: int = 9, valid_share: float = 0.4,
                   now_ms: int | None = None) -> Iterator[tuple[str, bytes, bytes, bool]]:
    """(topic, key, value, is_valid_shape) for n events. Valid-shaped events
    carry hostile text but must be accepted and stored safely; the others
    must be dead-lettered with a reason."""
    r = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    avro = codec(CUSTOMER_EVENT)
    for i in range(n):
        source = SOURCES[i % len(SOURCES)]
        source_id = f"F{seed}-{i}"
        key = f"{source}:{source_id}".encode()
        if r.random() < valid_share:
            event = valid_event(r, source, source_id, now_ms)
            value = avro.encode(event) if r.random() < 0.5 else orjson.dumps(event)
            yield f"raw.{source}", key, value, True
        else:
            value, _ = hostile_payload(r, source, source_id, now_ms)
            yield f"raw.{source}", key, value, False
