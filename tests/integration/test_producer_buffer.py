"""The worker's producer buffer drains in a few turns of the event loop, on the real broker.

faust's commit flushes its producer buffer (table writes, ``send_soon``) before it commits
the offsets, and faust sent each buffered message through a start-up guard that hands the
event loop over three times. In a busy worker every hand-over waited behind the agents'
work, and a commit took seconds (docs/validation.md, "Stop 65"). Counted here in turns of
the loop while messages wait in the buffer (a coroutine that looks at every turn), not in
seconds, so a loaded machine does not change the result.
"""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.topics import read_topic_to_end
from streams.runtime.draining import DrainingApp
from tests.conftest import KafkaBroker

MESSAGES = 600
MAX_TURNS = 60
"""Turns of the loop during which messages may still wait in the buffer while it is flushed
(faust's own path takes three per message, 1,800 and more)."""


async def _flush_turns(broker: KafkaBroker, name: str) -> tuple[int, int]:
    """Put :data:`MESSAGES` messages in the producer buffer and flush it; the turns of the
    loop during the flush that found messages in the buffer, and how many messages the
    producer acknowledged."""
    app = DrainingApp(name, broker=broker.url)
    topic = app.topic(name, key_type=bytes, value_type=bytes, partitions=1)
    await app.producer.start()
    try:
        await topic.maybe_declare()
        futures = [topic.send_soon(key=b"k%d" % i, value=b"v%d" % i) for i in range(MESSAGES)]
        assert app.producer.buffer.size == MESSAGES
        turns = 0
        flushing = True

        async def count() -> None:
            nonlocal turns
            while flushing:
                turns += app.producer.buffer.size > 0
                await asyncio.sleep(0)

        counter = asyncio.ensure_future(count())
        await app.producer.flush()
        flushing = False
        await counter
        delivered = sum(1 for f in futures if f.done() and not f.exception())
    finally:
        await app.producer.stop()
    return turns, delivered


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_producer_buffer_drains_in_a_few_turns_of_the_loop(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    name = f"t{unique_name}-buffer"
    turns, delivered = asyncio.run(_flush_turns(kafka_broker, name))
    print(f"flushing {MESSAGES} buffered messages: some waited {turns} turns of the loop")
    assert delivered == MESSAGES
    assert turns <= MAX_TURNS
    records = read_topic_to_end(kafka_broker.bootstrap, name)
    assert sorted(r.value or b"" for r in records) == sorted(b"v%d" % i for i in range(MESSAGES))
