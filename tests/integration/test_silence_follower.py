"""The worker's silence follower on the real broker: it holds back until it has read the
silences topic to its end, and a deleted silence stops muting."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from yarl import URL

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from alerting.silences import new_silence, silences_topic
from streams.cli.common import ensure_service_topics
from streams.pipeline.detect import Detect
from streams.runtime.agents import SilenceFollower, _follow_control
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.incidents import publish_records
from tests.unit.alerting.helpers import T0, minutes

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_engines_take_the_silences_only_once_the_topic_is_read_and_a_tombstone_deletes(
    kafka_broker: KafkaBroker, service_settings: Settings
) -> None:
    """Before, the worker synced each engine with an empty list until its follower's first
    fetch: an engine restored in the first seconds after a start lost its runtime
    silences, and the maintenance window paged. A tombstone was folded with
    ``dict.update``, which never deletes: the silence muted until the next restart."""
    det = service_settings.detection
    detect = Detect(
        det, load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir), {}, {}
    )
    ensure_service_topics(service_settings, [kafka_broker.bootstrap])  # (one partition)
    topic = silences_topic(service_settings.topics.control)
    records = [
        new_silence(
            model=f"model-{i}",
            duration=timedelta(hours=2),
            now=T0,
            comment="maintenance",
            created_by="sre",
        )
        for i in range(40)
    ]
    publish_records(kafka_broker.bootstrap, topic, [(r.key(), r.to_json_bytes()) for r in records])
    follower = SilenceFollower(detect)
    seen_at_catch_up: list[int] = []

    def caught_up() -> None:
        seen_at_catch_up.append(len(follower.state))
        follower.caught_up()

    tasks: list[Any] = []
    app = SimpleNamespace(
        conf=SimpleNamespace(broker=[URL(f"kafka://{kafka_broker.bootstrap}")]),
        task=tasks.append,
    )
    _follow_control(app, service_settings, topic, follower.fold, caught_up=caught_up)  # type: ignore[arg-type]
    [follow] = tasks
    now = T0 + minutes(5)

    async def run() -> None:
        task = asyncio.create_task(follow())
        try:
            for _ in range(600):
                if detect.silences is not None:
                    break
                await asyncio.sleep(0.05)
            assert seen_at_catch_up == [len(records)]  # all of them, before any engine sync
            assert detect.silences is not None
            assert [s.id for s in detect.silences(now, "model-3")] == [records[3].id]
            tombstone: list[tuple[bytes | None, bytes | None]] = [(records[3].key(), None)]
            await asyncio.to_thread(publish_records, kafka_broker.bootstrap, topic, tombstone)
            for _ in range(600):
                if not detect.silences(now, "model-3"):
                    break
                await asyncio.sleep(0.05)
            assert detect.silences(now, "model-3") == []
            assert [s.id for s in detect.silences(now, "model-4")] == [records[4].id]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert seen_at_catch_up == [len(records)]  # once
