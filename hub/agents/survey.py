"""Agent survey: survey / NPS answers → survey store, and a recompute of the golden record."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.survey), name="survey")
    async def survey(stream):
        await run_batches(hub, "survey", stream)
