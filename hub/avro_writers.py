"""Avro writers generated from the hub's schemas: one plain Python function per
record type, written out field by field, for the hot path's encodes.

fastavro's compiled writer spends most of its time choosing union branches
(it validates the value against each branch): 20-60 µs for one of the hub's
records, two to three of them per event, a tenth of a worker's CPU. Every
union in the hub's schemas is `[null, X]`, so a generated writer knows each
field's branch from `is None` alone and writes the same bytes several times
faster.

The generated code takes only plain values of the exact Python types (str,
int in range, float, bool, bytes, dict, list, an enum's symbol); anything
else raises `NotPlain`, and the caller then hands the whole record to
fastavro, which writes it or refuses it as it always has. So the bytes and
the errors are fastavro's by construction, and tests/unit/test_avro_writers.py
checks the bytes against fastavro's on generated and fuzzed records.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


class NotPlain(Exception):
    """A value the generated writer does not take: fastavro writes (or refuses) the record."""


def _varint(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def zigzag(n: int) -> bytes:
    """`n` as Avro writes an int or long: zigzag, then base-128 varint."""
    return _varint((n << 1) ^ (n >> 63))


# Lengths and counts below this are looked up, not computed: nearly every string and array
_SMALL = 4096
_LENGTHS = tuple(zigzag(n) for n in range(_SMALL))


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < _SMALL else zigzag(n)


# Timestamps repeat within a record (a golden record's lineage names the same event time per attribute)
# and across a batch: their bytes are kept rather than computed digit by digit each time
_LONGS: dict[int, bytes] = {}
_LONGS_KEPT = 4096  # a pass of 500 events names fewer distinct times; about 0.5 MB when full


def _long(n: int) -> bytes:
    if type(n) is not int:
        raise NotPlain
    encoded = _LONGS.get(n)
    if encoded is None:
        if not _LONG_MIN <= n <= _LONG_MAX:
            raise NotPlain
        if len(_LONGS) >= _LONGS_KEPT:
            _LONGS.clear()
        encoded = _LONGS[n] = zigzag(n)
    return encoded


def _int(n: int) -> bytes:
    if type(n) is not int or not _INT_MIN <= n <= _INT_MAX:
        raise NotPlain
    return _LENGTHS[n] if 0 <= n < _SMALL else zigzag(n)


class _Generator:
    """Writes the source of one function per named record type, and of the entry function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.functions: dict[str, str] = {}
        self.named: dict[str, dict] = {}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: Any, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.constants[name] = value
        return name

    def record_function(self, schema: dict) -> str:
        full = schema.get("name", "")
        if full and full in self.functions:
            return self.functions[full]
        function = self.name("w_record")
        if full:
            self.functions[full] = function
        body: list[str] = [f"def {function}(d, o):", "    if type(d) is not dict:", "        raise NotPlain"]
        for field in schema["fields"]:
            value = self.name("v")
            if "default" in field:
                default = field["default"]
                if default is None:
                    body.append(f"    {value} = d.get({field['name']!r})")
                else:
                    body.append(f"    {value} = d.get({field['name']!r}, {self.constant(default, 'default')})")
            else:
                body.append(f"    {value} = d[{field['name']!r}]")
            body.extend(self.write(field["type"], value, "    "))
        self.lines.extend(body)
        self.lines.append("")
        return function

    def write(self, schema: Any, value: str, indent: str) -> list[str]:
        """Statements appending `value`, of type `schema`, to `o`."""
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            self.named.setdefault(schema["name"], schema)
            if "namespace" in schema and "." not in schema["name"]:
                self.named.setdefault(f"{schema['namespace']}.{schema['name']}", schema)
        kind = schema if isinstance(schema, str) else ("union" if isinstance(schema, list) else schema["type"])
        if isinstance(schema, dict) and "logicalType" in schema:
            raise NotImplementedError("logical types are fastavro's to convert")
        if kind == "null":
            return [f"{indent}if {value} is not None:", f"{indent}    raise NotPlain"]
        if kind == "boolean":
            return [f"{indent}if {value} is True:", f"{indent}    o += b'\\x01'",
                    f"{indent}elif {value} is False:", f"{indent}    o += b'\\x00'",
                    f"{indent}else:", f"{indent}    raise NotPlain"]
        if kind == "long":
            return [f"{indent}o += _long({value})"]
        if kind == "int":
            return [f"{indent}o += _int({value})"]
        if kind == "double":
            return [f"{indent}if type({value}) is not float:", f"{indent}    raise NotPlain",
                    f"{indent}o += _pack_double({value})"]
        if kind == "float":
            return [f"{indent}if type({value}) is not float:", f"{indent}    raise NotPlain",
                    f"{indent}o += _pack_float({value})"]
        if kind == "string":
            encoded = self.name("b")
            return [f"{indent}if type({value}) is not str:", f"{indent}    raise NotPlain",
                    f"{indent}{encoded} = {value}.encode()",
                    f"{indent}o += _LENGTHS[len({encoded})] if len({encoded}) < {_SMALL} else zigzag(len({encoded}))",
                    f"{indent}o += {encoded}"]
        if kind == "bytes":
            return [f"{indent}if type({value}) is not bytes:", f"{indent}    raise NotPlain",
                    f"{indent}o += _length(len({value}))", f"{indent}o += {value}"]
        if kind == "fixed":
            return [f"{indent}if type({value}) is not bytes or len({value}) != {int(schema['size'])}:",
                    f"{indent}    raise NotPlain", f"{indent}o += {value}"]
        if kind == "enum":
            table = self.constant({symbol: zigzag(i) for i, symbol in enumerate(schema["symbols"])}, "enum")
            return [f"{indent}if type({value}) is not str:", f"{indent}    raise NotPlain",
                    f"{indent}o += {table}[{value}]"]
        if kind == "record":
            return [f"{indent}{self.record_function(schema)}({value}, o)"]
        if kind == "array":
            item = self.name("item")
            return [f"{indent}if type({value}) is not list:", f"{indent}    raise NotPlain",
                    f"{indent}if {value}:", f"{indent}    o += _length(len({value}))",
                    f"{indent}    for {item} in {value}:",
                    *self.write(schema["items"], item, indent + "        "),
                    f"{indent}o += b'\\x00'"]
        if kind == "map":
            key, item = self.name("key"), self.name("item")
            return [f"{indent}if type({value}) is not dict:", f"{indent}    raise NotPlain",
                    f"{indent}if {value}:", f"{indent}    o += _length(len({value}))",
                    f"{indent}    for {key}, {item} in {value}.items():",
                    *self.write("string", key, indent + "        "),
                    *self.write(schema["values"], item, indent + "        "),
                    f"{indent}o += b'\\x00'"]
        if kind == "union":
            return self.union(schema, value, indent)
        raise NotImplementedError(f"no generated writer for Avro type {kind!r}")

    def union(self, branches: list, value: str, indent: str) -> list[str]:
        kinds = [b if isinstance(b, str) else b["type"] for b in branches]
        if len(branches) != 2 or "null" not in kinds:
            # fastavro picks among several non-null branches by validating each: left to it
            return [f"{indent}raise NotPlain"]
        null_at = kinds.index("null")
        other = branches[1 - null_at]
        named = other if isinstance(other, str) else other.get("name") if isinstance(other, dict) else None
        # fastavro's tuple notation, (type name, value), names the branch: taken for a named type
        tagged = [f"{indent}    if type({value}) is tuple:",
                  f"{indent}        if len({value}) != 2 or {value}[0] != {named!r}:", f"{indent}            raise NotPlain",
                  f"{indent}        {value} = {value}[1]"] if named and "." in named else []
        return [f"{indent}if {value} is None:", f"{indent}    o += {zigzag(null_at)!r}",
                f"{indent}else:", *tagged, f"{indent}    o += {zigzag(1 - null_at)!r}",
                *self.write(other, value, indent + "    ")]


def generate(schema: dict, named: dict[str, dict] | None = None) -> Callable[[dict], bytes]:
    """A function writing a record of `schema` as Avro binary, raising NotPlain for values it does not
    take. A named type the schema uses by name is looked up in `named` (full name to its definition) unless
    the schema defines it. NotImplementedError for a schema it cannot write (not a record, an unknown
    type)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise NotImplementedError("generated writers are for records")
    generator = _Generator()
    generator.named.update(named or {})
    entry = generator.record_function(schema)
    source = "\n".join(generator.lines) + (
        f"\ndef write(d):\n    o = bytearray()\n    {entry}(d, o)\n    return bytes(o)\n")
    namespace: dict[str, Any] = {"NotPlain": NotPlain, "_LENGTHS": _LENGTHS, "zigzag": zigzag, "_long": _long, "_int": _int, "_length": _length,
                                 "_pack_double": _pack_double, "_pack_float": _pack_float,
                                 **generator.constants}
    exec(compile(source, f"<generated Avro writer for {schema.get('name')}>", "exec"), namespace)
    return namespace["write"]
