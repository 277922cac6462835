"""The worker's producer buffer drains in a few turns of the event loop, on the real broker.

faust's commit flushes its producer buffer (table writes, ``send_soon``) before it commits
the offsets, and faust sent each buffered message through a start-up guard that hands the
event loop over three times. In a busy worker every hand-over waited behind the agents'
work, and a commit took seconds (docs/validation.md, "Stop 65"). An agent's own ``send``
keeps the guard: its hand-overs are what lets the other agents in between its sends.
Counted in turns of the loop (a coroutine that looks at every turn), not in seconds, so a
loaded machine does not change the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from streams.kafka.topics import read_topic_to_end
from streams.runtime.draining import DrainingApp
from tests.conftest import KafkaBroker

MESSAGES = 600
MAX_TURNS = 60
"""Turns of the loop during which messages may still wait in the buffer while it is flushed
(faust's own path takes three per message, 1,800 and more)."""


async def _turns_while(work: Awaitable[object], counts: Callable[[], bool]) -> int:
    """Await ``work``; the turns of the loop meanwhile in which ``counts()`` held (a
    coroutine that looks at every turn)."""
    turns = 0
    running = True

    async def count() -> None:
        nonlocal turns
        while running:
            turns += counts()
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count())
    await work
    running = False
    await counter
    return turns


async def _sends(topic: Any) -> None:
    """:data:`MESSAGES` messages sent one by one with ``send`` (not buffered)."""
    for i in range(MESSAGES):
        await topic.send(key=b"s%d" % i, value=b"s%d" % i)


async def _turns(broker: KafkaBroker, name: str) -> tuple[int, int, int]:
    """Put :data:`MESSAGES` messages in the producer buffer and flush it, then send as many
    with ``send``; the turns of the loop during the flush that found messages in the
    buffer, how many buffered messages the producer acknowledged, and the turns the
    ``send`` calls handed over."""
    app = DrainingApp(name, broker=broker.url)
    topic = app.topic(name, key_type=bytes, value_type=bytes, partitions=1)
    await app.producer.start()
    try:
        await topic.maybe_declare()
        futures = [topic.send_soon(key=b"k%d" % i, value=b"v%d" % i) for i in range(MESSAGES)]
        assert app.producer.buffer.size == MESSAGES
        waiting = await _turns_while(app.producer.flush(), lambda: app.producer.buffer.size > 0)
        delivered = sum(1 for f in futures if f.done() and not f.exception())
        handed = await _turns_while(_sends(topic), lambda: True)
    finally:
        await app.producer.stop()
    return waiting, delivered, handed


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_producer_buffer_drains_in_a_few_turns_and_sends_still_hand_over(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    name = f"t{unique_name}-buffer"
    turns, delivered, handed = asyncio.run(_turns(kafka_broker, name))
    print(
        f"flushing {MESSAGES} buffered messages: some waited {turns} turns of the loop; "
        f"{MESSAGES} sends handed the loop over {handed} times"
    )
    assert delivered == MESSAGES
    assert turns <= MAX_TURNS
    assert handed >= MESSAGES
    records = read_topic_to_end(kafka_broker.bootstrap, name)
    expected = [b"v%d" % i for i in range(MESSAGES)] + [b"s%d" % i for i in range(MESSAGES)]
    assert sorted(r.value or b"" for r in records) == sorted(expected)
