"""Agent steward: a data steward's split and link decisions → the identity index and the master."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.steward), name="steward")
    async def steward(stream):
        await run_batches(hub, "steward", stream)
