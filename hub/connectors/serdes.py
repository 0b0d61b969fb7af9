"""How source connectors write events and read Avro: JSON, Avro with the hub's
local schema ids, or Avro with the ids of a Confluent Schema Registry
(confluent-kafka's serdes; `mock://` URLs give its in-process mock registry).

The registry path needs the `schemaregistry` extra; its code
(hub.connectors.schema_registry) is loaded through hub.connectors.registry, so
a missing extra names its pip command.
"""

from __future__ import annotations

import json
from functools import lru_cache

import orjson

from hub.schemas import CUSTOMER_EVENT, codec, schema_dir


@lru_cache(maxsize=None)
def standalone_schema(name: str) -> str:
    """A schema with the named types it uses written inline, as a registry stores it."""
    base = schema_dir()
    seen: set[str] = set()

    def inline(node):
        if isinstance(node, str) and node.startswith("hub.") and (base / f"{node}.avsc").is_file():
            if node in seen:
                return node
            seen.add(node)
            return inline(json.loads((base / f"{node}.avsc").read_text()))
        if isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed"):
                seen.add(f"{node.get('namespace', 'hub')}.{node['name']}" if "." not in node["name"] else node["name"])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return json.dumps(inline(name))


@lru_cache(maxsize=None)
def registry_avro(url: str):
    from hub.connectors.registry import load

    return load("serde", "schema-registry")(url)


def event_encoder(value_format: str, registry_url: str | None):
    """topic, CustomerEvent dict -> bytes as the ingest stage reads them."""
    if value_format == "json":
        return lambda _topic, event: orjson.dumps(event)
    if registry_url:
        avro = registry_avro(registry_url)
        return lambda topic, event: avro.encode(topic, _complete(event))
    local = codec(CUSTOMER_EVENT)
    return lambda _topic, event: local.encode(_complete(event))


def _complete(event: dict) -> dict:
    """Fill the defaults the Avro writer needs (JSON lets them be absent)."""
    return codec(CUSTOMER_EVENT).decode(codec(CUSTOMER_EVENT).encode(event))
