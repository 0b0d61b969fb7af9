"""Steward stage: a data steward's split, link and release decisions, applied
to the identity index and handed to the master.

Each action is stored as constraints on the records it names (kept apart,
kept together), which the matcher honours for records that arrive later, so
the decision survives replay and re-matching. Then it is applied to what the
index holds now: a split moves the record to a golden record of its own if it
shares one with any record it must be apart from; a link merges the golden
records of the records it must be with. A release (the workbench's undo)
lifts the constraints between the records and moves nothing; the latest
decision about a pair replaces the one before it.
"""

from __future__ import annotations

import hashlib
import time


from hub import metrics
from hub.config import PipelineConfig
from hub.matching.decide import new_golden_id
from hub.messages import audit_event, link_instruction
from hub.ports import IdentityIndex, LinkRequest
from hub.records import InMessage, OutMessage, StageError
from hub.schemas import AUDIT, LINKED, STEWARD_ACTION, codec
from hub.stages import StageOutput, decode_or_error

STAGE = "steward"


def split_golden_id(member: str, current: str) -> str:
    """Where a split record goes: the id it would have founded, unless the
    record it leaves already carries that id (then the others keep it)."""
    own = new_golden_id(member)
    return own if own != current else new_golden_id(f"{member}|split")


class StewardStage:
    def __init__(self, config: PipelineConfig, index: IdentityIndex):
        self.config = config
        self.index = index
        self.linked = codec(LINKED)
        self.audit = codec(AUDIT)

    def _decode(self, message: InMessage) -> dict | StageError:
        action = decode_or_error(STAGE, STEWARD_ACTION, message.value)
        if isinstance(action, StageError):
            return action
        members = [action["member"], *action["others"]]
        if not action["others"] or any(":" not in m for m in members) or action["member"] in action["others"]:
            return StageError(STAGE, "absurd_value", "name <source>:<source_id> records, and at least one other")
        return action

    async def process(self, batch: list[InMessage]) -> StageOutput:
        out: list[OutMessage] = []
        topics = self.config.topics
        for message in batch:
            action = self._decode(message)
            if isinstance(action, StageError):
                metrics.DLQ.labels("steward", action.stage, action.reason).inc()
                out.append(action.dead_letter(message, topics.steward_dlq))
                continue
            member, others, kind = action["member"], sorted(set(action["others"])), action["action"]
            await self.index.add_constraints(kind, member, others)
            entries = await self.index.members([member, *others])
            cause = f"steward {kind} by {action['actor'][:128]}"
            instruction = None
            if kind == "split" and member in entries:
                current = entries[member].golden_id
                held = {entries[o].golden_id for o in others if o in entries}
                if current in held:
                    target = split_golden_id(member, current)
                    await self.index.move(member, target)
                    instruction = self._split(current, member, target, cause)
                else:
                    # split already (this batch retried, or its output lost in a crash): tell the master
                    # again, which moves the contribution if it has not
                    origins = sorted(g for g in held if split_golden_id(member, g) == current)
                    if origins:
                        instruction = self._split(origins[0], member, current, cause)
            elif kind == "link" and member in entries:
                entry = entries[member]
                absorbed = sorted({entries[o].golden_id for o in others if o in entries} - {entry.golden_id})
                survivor = entry.golden_id
                if absorbed:
                    (survivor,) = await self.index.link([LinkRequest(member, entry.golden_id, entry.features,
                                                                     entry.blocks, absorbed)])
                if absorbed or any(o in entries for o in others):
                    # linked already, maybe by this batch before a crash: the master folds in what the
                    # index merged and the golden store has not (the index's pending folds)
                    instruction = link_instruction(survivor, "contribution", cause, absorbed=absorbed)
            metrics.STEWARD_ACTIONS.labels(kind, "applied" if instruction else "recorded").inc()
            digest = hashlib.blake2s(message.value or b"", digest_size=10).hexdigest()
            audit = audit_event(f"S{digest}", int(time.time() * 1000), "steward_action",
                                f"{cause}: {', '.join(others)}"[:1000],
                                golden_id=instruction["golden_id"] if instruction else None, subject=member)
            out.append(OutMessage(topics.audit, member.encode(), self.audit.encode(audit)))
            if instruction:
                out.append(OutMessage(topics.linked, instruction["golden_id"].encode(),
                                      self.linked.encode(instruction)))
        return StageOutput(out)

    @staticmethod
    def _split(current: str, member: str, target: str, cause: str) -> dict:
        return link_instruction(current, "split", cause, split_member=member, split_to=target)
