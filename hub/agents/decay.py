"""Timer decay: a golden record whose value is about to go stale is recomputed
(cause data_decay) when that time comes, with no new event needed."""

from hub.app import Hub, recompute_due


def register(hub: Hub) -> None:
    rules = hub.pipeline.survivorship

    @hub.app.timer(interval=rules.decay_check_interval_s)
    async def data_decay() -> None:
        if rules.stale_after_days is not None:
            await recompute_due(hub, "decay", "data_decay")
