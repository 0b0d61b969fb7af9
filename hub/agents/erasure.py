"""Agent erasure: right-to-be-forgotten requests → an erase instruction for the master."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, hub.pipeline.topics.erasure), name="erasure")
    async def erasure(stream):
        await run_batches(hub, "erasure", stream)
