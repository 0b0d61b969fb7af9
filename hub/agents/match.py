"""Agent match: Canonical records → golden ids through the identity index (customer.linked)."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.canonical), name="match")
    async def match(stream):
        await run_batches(hub, "match", stream)
