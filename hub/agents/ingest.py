"""Agent ingest: Raw source events → canonical records or the source's DLQ."""

from hub.app import Hub, raw_topic, run_batches


def register(hub: Hub) -> None:
    @hub.app.agent(raw_topic(hub.app, *(s.raw_topic for s in hub.pipeline.sources)), name="ingest")
    async def ingest(stream):
        await run_batches(hub, "ingest", stream)
