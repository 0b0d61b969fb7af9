"""Agent syndicate: Golden records → each target's topic, within consent."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.golden), name="syndicate")
    async def syndicate(stream):
        await run_batches(hub, "syndicate", stream)
