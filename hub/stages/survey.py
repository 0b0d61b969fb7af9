"""Survey stage: survey / NPS answers into the survey store, and a recompute
request for the golden record they concern.

Like consent: an answer names a source record; the store keeps the latest
answer per survey by its own time, so late or repeated answers change
nothing; an answer for a record the hub has not seen yet waits in the store
and applies when that record arrives. Bad answers go to the DLQ with a reason.
"""

from __future__ import annotations

import time

from hub import metrics, surveys
from hub.config import PipelineConfig
from hub.ports import IdentityIndex, SurveyStore
from hub.records import InMessage, OutMessage, StageError, member_key
from hub.schemas import SURVEY_RESPONSE
from hub.stages import StageOutput, decode_or_error, recompute_members

STAGE = "survey"


class SurveyStage:
    def __init__(self, config: PipelineConfig, index: IdentityIndex, store: SurveyStore):
        self.config = config
        self.index = index
        self.store = store

    async def process(self, batch: list[InMessage], now_ms: int | None = None) -> StageOutput:
        now_ms = now_ms or int(time.time() * 1000)
        quality = self.config.quality
        out: list[OutMessage] = []
        answers: dict[str, list[dict]] = {}
        for message in batch:
            response = decode_or_error(STAGE, SURVEY_RESPONSE, message.value)
            if not isinstance(response, StageError):
                reason = surveys.problem(response, now_ms, quality.min_event_year, quality.max_future_skew_s)
                if reason:
                    response = StageError(STAGE, reason, "score must be 0..10, responded_at a plausible time, "
                                                         "survey_id and source_id given")
            if isinstance(response, StageError):
                metrics.SURVEY_EVENTS.labels("rejected").inc()
                metrics.DLQ.labels("survey", response.stage, response.reason).inc()
                out.append(response.dead_letter(message, self.config.topics.survey_dlq))
                continue
            metrics.SURVEY_EVENTS.labels("received").inc()
            answers.setdefault(member_key(response["source"], response["source_id"]), []).append(
                surveys.stored(response))
        changed = [m for m, did in (await self.store.put_surveys(answers)).items() if did]
        out += await recompute_members(self.index, changed, self.config.topics.linked, "survey_received",
                                       metrics.SURVEY_EVENTS)
        return StageOutput(out)
