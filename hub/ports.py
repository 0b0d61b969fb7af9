"""The hub's ports: what stages need from the outside world, as Protocols.

Stages depend on these and nothing else; `hub/connectors/` holds the
implementations that move records (Kafka, files, webhooks...), chosen by URL
scheme, and `hub/store/` those that keep state: in Redis (`hub/store/redis/`,
a class per port) or in memory (every port the stages use: `hub resolve`,
unit tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from hub.records import InMessage, OutMessage


class Sink(Protocol):
    """Where a stage's outputs go, and what a target connector writes to.
    `flush` returns only when every added record is acknowledged, and raises
    if any was not: input offsets are committed after it returns, never
    before. After `flush` raises the sink holds nothing: the caller adds again
    what it wants retried. Stages add OutMessages; target connectors add the
    InMessage read from `mastered.<target>` (value None: the record is
    withdrawn, its `hub.reason` header says why), so a sink can derive an
    idempotency key from the record's origin."""

    def setup(self) -> None: ...
    def add(self, record: OutMessage | InMessage) -> None: ...
    def flush(self) -> None: ...


class Source(Protocol):
    """Where a source connector reads customer events from (a file, a CDC
    topic, ...). Constructed as `Source(url, source_config, **options)`.
    `poll` returns the next events as CustomerEvent-shaped dicts (op delete
    for a deletion) or `Rejected` for input that cannot become one (kept in
    the source's DLQ with the reason); an empty list when nothing is ready
    yet, None when the source is exhausted (a file read to its end).
    `commit` is called once everything polled so far is acknowledged by the
    broker, so a source that can resume (a consumer group) resumes there."""

    def setup(self) -> None: ...
    def poll(self, max_records: int) -> list[dict | Rejected] | None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Rejected:
    """Source input that cannot become a customer event: kept, with why."""

    raw: bytes | None
    reason: str
    detail: str = ""
    key: bytes | None = None
    origin: tuple[str, int, int] | None = None  # topic, partition, offset it was read from


@dataclass(slots=True)
class MemberEntry:
    member: str
    golden_id: str
    features: dict
    blocks: list[str] = field(default_factory=list)
    golden_size: int | None = None  # source records its golden record held when read (asked: `with_sizes`)


@dataclass(slots=True)
class LinkRequest:
    member: str
    golden_id: str
    features: dict
    blocks: list[str]
    absorbed: list[str] = field(default_factory=list)
    seen_versions: dict[str, int] = field(default_factory=dict)  # block -> version it was decided on
    terms: list[str] = field(default_factory=list)  # term keys the index counts while it holds the record


@dataclass(slots=True)
class BlockView:
    members: list[str] | None  # None: shared by too many records to be used
    version: int


class IdentityIndex(Protocol):
    """Who is who: members (source records), their features and golden ids,
    and blocking keys that find candidates. The index is the point of
    agreement between workers: `link` is atomic per record."""

    async def members(self, members: list[str], with_blocks: bool = True,
                      with_sizes: bool = False) -> dict[str, MemberEntry]:
        """The entries of those held; without `with_blocks` their blocking keys are left out (empty): a
        candidate's are not needed, and they are a third of what an entry weighs. `with_sizes`: each with
        its golden record's size (MemberEntry.golden_size), read with its golden id."""
    async def blocks(self, block_keys: list[str], limit: int) -> dict[str, BlockView]:
        """Members under each key (None when more than `limit` share it) and the key's version."""
    async def link(self, requests: list[LinkRequest | str]) -> list[str | None]:
        """Apply links (and unlinks, given as the member key) in order, as one
        atomic step; returns each record's golden id as finally stored. A
        shorter list means the next record's blocks changed since it was
        decided: it and the rest were not applied."""
    async def unlink(self, members: list[str]) -> list[str | None]:
        """Remove records, and what is remembered of their deletion (an
        erasure); returns the golden id each belonged to."""
    async def members_soon(self, members: list[str], with_blocks: bool = True,
                           with_sizes: bool = False) -> Callable[[], dict[str, MemberEntry]]:
        """`members`, read with the store's next round trip where it can hold a read for one (Redis inside
        `writes_together`): a function giving them, reading them then if no round trip has carried them."""
    async def tombstones(self, members: list[str]) -> dict[str, int]:
        """When each of these records was deleted by its source (absent: never)."""
    async def tombstones_soon(self, members: list[str]) -> Callable[[], dict[str, int]]:
        """`tombstones`, as `members_soon` reads."""
    async def add_tombstones(self, deleted: dict[str, int]) -> None:
        """Remember deletions; the latest time per record is kept."""
    async def remember_deleted_from(self, golden_ids: dict[str, str]) -> None:
        """Remember the golden record each deleted record left (before it leaves the index)."""
    async def deleted_from(self, members: list[str]) -> dict[str, str]:
        """The golden record each of these deleted records left (absent: not deleted, or erased)."""
    async def tallies(self, terms: list[str], golden_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Records held under each term key (LinkRequest.terms; absent: none),
        and source records per golden record, in one round trip."""
    async def tallies_soon(self, terms: list[str], golden_ids: list[str]
                           ) -> Callable[[], tuple[dict[str, int], dict[str, int]]]:
        """`tallies`, as `members_soon` reads."""
    async def constraints(self, members: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Steward constraints of these records: (kept apart from, kept together with)."""
    async def constraints_soon(self, members: list[str]) -> Callable[[], dict[str, tuple[set[str], set[str]]]]:
        """`constraints`, as `members_soon` reads."""
    async def add_constraints(self, kind: str, member: str, others: list[str]) -> None: ...
    async def move(self, member: str, golden_id: str) -> str | None:
        """Move a record to another golden record; returns the one it left."""
    async def golden_members(self, golden_id: str) -> list[str]: ...
    async def remember_decisions(self, decisions: dict[str, bytes]) -> None:
        """Keep each record's latest match decision (JSON) with its index entry."""
    async def forget_references(self, members: list[str]) -> None:
        """Remove these (erased) records from other records' stored decisions."""
    async def resolve_forward(self, golden_ids: list[str]) -> dict[str, str]:
        """Each golden id mapped to its survivor (itself unless merged away)."""
    async def pending_folds(self, golden_ids: list[str]) -> dict[str, list[str]]:
        """Golden ids merged into each of these whose contributions the master has not folded in yet."""
    async def survivors_and_folds(self, golden_ids: list[str]
                                  ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
        """resolve_forward of these, pending_folds of their survivors, and the pending folds (possibly none)
        of each golden id those absorbed, level by level (a bounded number of them), in one read: where a
        master pass's golden ids stand."""
    async def folded(self, folds: dict[str, list[str]]) -> None: ...


@dataclass(slots=True)
class GoldenState:
    golden_id: str
    contributions: dict[str, dict]
    golden: dict | None
    last_audit: bytes | None = None


class GoldenStore(Protocol):
    async def load(self, golden_ids: list[str]) -> dict[str, GoldenState]: ...
    async def load_soon(self, golden_ids: list[str]) -> Callable[[], dict[str, GoldenState]]:
        """`load`, read with the store's next round trip where it can hold a read for one (as
        IdentityIndex.members_soon)."""
    async def goldens(self, golden_ids: list[str]) -> dict[str, dict | None]:
        """The golden records as held now (None: none), and nothing else of them: one round trip."""
    async def save(self, states: list[GoldenState], deleted: list[str],
                   lookup: dict[str, tuple[set[str], set[str]]] | None = None, lease_owner: str | None = None) -> None:
        """Save golden states, delete golden records; `lookup` maps a golden id
        to the lookup index keys (hub.lookup) it (removes, adds), in the same round trip.
        With `lease_owner`, each record is written only while that owner holds its lease
        (GoldenLeases), else LeaseLost."""
    async def schedule(self, due: dict[str, int | None], kind: str = "consent") -> None:
        """When each golden record must next be recomputed for `kind` (consent, decay); None: never."""


class LeaseLost(RuntimeError):
    """A golden record's lease was no longer the writer's when it saved (it expired, another took it): the
    save wrote none of the records it held; the batch is tried again from the start (hub.runner)."""


class GoldenLeases(Protocol):
    """Who masters a golden record now, where no topic partition says so (the fused engine, hub.engine)."""

    async def lease(self, golden_ids: list[str], owner: str, ttl_ms: int) -> list[str]:
        """Take or renew every lease for `owner`, all or none; the ids another owner holds (then none is kept)."""
    async def lease_soon(self, golden_ids: list[str], owner: str, ttl_ms: int) -> Callable[[], list[str]]:
        """`lease`, taken with the store's next round trip where it can hold one (IdentityIndex.members_soon):
        a function giving the ids refused."""
    async def release(self, golden_ids: list[str], owner: str) -> None:
        """Give back what `owner` holds of these; an expired lease another took since stays theirs. A lease
        someone was refused is given back with a word to them (`wait_released`)."""
    async def wait_released(self, golden_id: str, timeout_s: float) -> bool:
        """After `golden_id`'s lease was refused: wait until its holder gives it back (True, also when it
        already has) or `timeout_s` passes (False)."""


class ConsentStore(Protocol):
    async def put(self, statements: dict[str, list[dict]]) -> dict[str, bool]:
        """Store statements per member; the latest per (purpose, channel) by
        event_time wins. True for each member whose consent changed, or that
        holds one of these statements already (a retried batch must still
        recompute the golden record its first pass did not)."""
    async def put_later(self, statements: dict[str, list[dict]]) -> None:
        """`put`, nothing returned: with the store's next round trip where it can hold a write for one."""
    async def get(self, members: list[str]) -> dict[str, list[dict]]: ...
    async def get_soon(self, members: list[str]) -> Callable[[], dict[str, list[dict]]]:
        """`get`, as IdentityIndex.members_soon reads."""
    async def forget(self, members: list[str]) -> None:
        """Erase every statement held for these members."""


class SurveyStore(Protocol):
    async def put_surveys(self, answers: dict[str, list[dict]]) -> dict[str, bool]:
        """Store survey answers per member; the latest per survey by responded_at
        wins. True for each member whose answers changed, or that holds one of
        these answers already (as `ConsentStore.put`)."""
    async def get_surveys(self, members: list[str]) -> dict[str, list[dict]]: ...
    async def forget_surveys(self, members: list[str]) -> None:
        """Erase every answer held for these members."""


class SyndicationState(Protocol):
    """What each target last received per golden id: (key, projection hash),
    saved once delivered; under `<target>|sending`, (key, "") for a key sent
    whose delivery is not confirmed yet."""

    async def load_syndication(self, golden_ids: list[str]) -> dict[str, dict[str, tuple[str, str]]]: ...
    async def load_syndication_soon(self, golden_ids: list[str]) -> Callable[[], dict[str, dict[str, tuple[str, str]]]]:
        """`load_syndication`, as IdentityIndex.members_soon reads."""
    async def save_syndication(self, updates: dict[str, dict[str, tuple[str, str] | None]]) -> None: ...
    async def schedule(self, due: dict[str, int | None], kind: str = "consent") -> None:
        """When each golden record's consent verdict can next change (None: never)."""
    async def take_due(self, now_ms: int, limit: int = 1000, kind: str = "consent") -> list[str]: ...
