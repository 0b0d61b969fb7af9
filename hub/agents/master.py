"""Agent master: Linked records → golden records and audit events."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.linked), name="master")
    async def master(stream):
        await run_batches(hub, "master", stream)
