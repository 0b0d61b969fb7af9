"""Agent consent: Consent statements → consent store, and a recompute of the golden record."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.consent), name="consent")
    async def consent(stream):
        await run_batches(hub, "consent", stream)
