"""Which class serves a connector URL: a small lazy table by URL scheme (as
Faust's transports), plus third-party connectors registered through the
`hub.sinks` / `hub.sources` entry-point groups.

Nothing is imported until a scheme is used, so a connector's extra
dependencies are only needed by those who use it; when they are missing, the
error names the `pip install` command of the pyproject extra that brings them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from urllib.parse import urlsplit

# scheme -> ("module:Class", pyproject extra or None)
SINKS: dict[str, tuple[str, str | None]] = {
    "kafka": ("hub.connectors.kafka:KafkaTopicSink", None),
    "http": ("hub.connectors.webhook:WebhookSink", None),
    "https": ("hub.connectors.webhook:WebhookSink", None),
    "file": ("hub.connectors.files:FileSink", None),
    "redis": ("hub.connectors.lookup_cache:LookupCacheSink", None),
    "rediss": ("hub.connectors.lookup_cache:LookupCacheSink", None),
    "unix": ("hub.connectors.lookup_cache:LookupCacheSink", None),
    "redis+cluster": ("hub.connectors.lookup_cache:LookupCacheSink", None),
    "rediss+cluster": ("hub.connectors.lookup_cache:LookupCacheSink", None),
}
SOURCES: dict[str, tuple[str, str | None]] = {
    "file": ("hub.connectors.files:FileSource", None),
    "debezium": ("hub.connectors.cdc:DebeziumSource", None),
}
# serialisers chosen by configuration rather than by URL, with their extras
SERDES: dict[str, tuple[str, str | None]] = {
    "schema-registry": ("hub.connectors.schema_registry:RegistryAvro", "schemaregistry"),
}
ENTRY_POINT_GROUPS = {"sink": "hub.sinks", "source": "hub.sources"}
_TABLES = {"sink": SINKS, "source": SOURCES, "serde": SERDES}


class ConnectorError(Exception):
    """A connector that cannot be found or loaded; the message says what to do."""


class MissingExtra(ConnectorError):
    """A connector's optional dependencies are not installed."""


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConnectorError(f"{url!r}: no scheme:// to choose a connector by")
    return scheme


def register(kind: str, scheme: str, target: str | type, extra: str | None = None) -> None:
    """Add or replace a connector at run time (`target`: a class or "module:Class")."""
    _TABLES[kind][scheme] = (target, extra)


def _import(spec: str | type, extra: str | None, what: str):
    if not isinstance(spec, str):
        return spec
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name and module_name.startswith(exc.name)):
            raise
        raise MissingExtra(f"{what} needs the optional package {exc.name!r}: "
                           f"pip install 'cmdm-hub[{extra}]'") from None
    return getattr(module, attr)


def load(kind: str, scheme: str):
    """The class serving `scheme` for `kind` (sink, source, serde)."""
    table = _TABLES[kind]
    if scheme in table:
        spec, extra = table[scheme]
        return _import(spec, extra, f"{kind} {scheme!r}")
    group = ENTRY_POINT_GROUPS.get(kind)
    if group:
        for entry in entry_points(group=group):
            if entry.name == scheme:
                return entry.load()
    known = sorted(set(table) | {e.name for e in entry_points(group=group)} if group else set(table))
    raise ConnectorError(f"no {kind} connector for scheme {scheme!r}; known: {known} "
                         f"(third-party connectors register under the entry-point group {group!r})")


def sink_for(url: str, **options):
    """A sink instance for a connector URL."""
    return load("sink", scheme_of(url))(url, **options)


def source_for(url: str, source, **options):
    """A source instance for a connector URL, writing for `source` (a SourceConfig)."""
    return load("source", scheme_of(url))(url, source, **options)
