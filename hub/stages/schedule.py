"""Schedule stage: what time alone changes, with no new event.

Consent that expires or starts, values that go stale (data decay) and
customers no source has confirmed for the retention period are found in the
store's due lists (the master and syndicate stages keep them) and turned
into work: a recompute request for the master (on customer.linked), or, for
retention, an audit event per customer flagged or an erasure request. The
worker drives each kind on its own interval (hub.dataflow.SCHEDULES); what
is taken is due again a minute later unless the recompute reschedules it, so
a tick whose outputs are lost in a crash is made up.
"""

from __future__ import annotations

from hub import metrics
from hub.config import PipelineConfig
from hub.messages import audit_event, link_instruction
from hub.records import OutMessage
from hub.schemas import AUDIT, LINKED, codec
from hub.stages import StageOutput, recompute_message

DAY_MS = 86_400_000


class ScheduleStage:
    def __init__(self, config: PipelineConfig, store):
        """`store`: the due lists (hub.ports.SyndicationState.take_due) and the golden store's activity
        (`inactive`, `mark_flagged`)."""
        self.config = config
        self.store = store
        self.linked = codec(LINKED)
        self.audit = codec(AUDIT)

    async def consent(self, now_ms: int) -> StageOutput:
        """Golden records whose consent verdict changes now (an expiry, a start)."""
        return await self._recompute("consent", "consent_schedule", now_ms)

    async def decay(self, now_ms: int) -> StageOutput:
        """Golden records one of whose values goes stale now (survivorship's stale_after_days)."""
        if self.config.survivorship.stale_after_days is None:
            return StageOutput()
        return await self._recompute("decay", "data_decay", now_ms)

    async def retention(self, now_ms: int) -> StageOutput:
        """Customers no source has confirmed for the retention period: flagged (an audit event each) or
        erased, as the policy says; marked once the outputs are delivered, so each is acted on once."""
        policy = self.config.retention
        if policy.inactive_days is None:
            return StageOutput()
        due = await self.store.inactive(now_ms - int(policy.inactive_days * DAY_MS))
        if not due:
            return StageOutput()
        topics = self.config.topics
        if policy.action == "erase":
            messages = [OutMessage(topics.linked, gid.encode(),
                                   self.linked.encode(link_instruction(gid, "erase", "retention policy")))
                        for gid in due]
        else:
            messages = [OutMessage(topics.audit, gid.encode(), self.audit.encode(audit_event(
                f"R{gid}@{now_ms // DAY_MS}", now_ms, "retention_flagged",
                f"no source event for {policy.inactive_days} days", golden_id=gid))) for gid in due]

        async def flagged() -> None:
            await self.store.mark_flagged(due)
            metrics.RETENTION.labels(policy.action).inc(len(due))
        return StageOutput(messages, flagged)

    async def _recompute(self, kind: str, cause: str, now_ms: int) -> StageOutput:
        due = await self.store.take_due(now_ms, kind=kind)
        return StageOutput([recompute_message(self.config.topics.linked, gid, cause) for gid in due])
