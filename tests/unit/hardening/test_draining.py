"""The app's drain hook (streams.runtime.draining): once faust has waited for its agents
before a rebalance or a stop, every callback runs (the pipeline writes its detector sets
back there), and one that fails is logged without stopping the others or the rebalance.
``tests/integration/test_failover.py`` runs it in workers on the real broker."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.runtime.draining import DrainingApp


def test_every_drain_callback_runs_and_a_failing_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = DrainingApp("t-drain", broker="kafka://127.0.0.1:9", stream_wait_empty=False)
    calls: list[str] = []

    def fails() -> None:
        calls.append("fails")
        raise RuntimeError("store closed")

    app.drained += [lambda: calls.append("first"), fails, lambda: calls.append("last")]
    with caplog.at_level(logging.ERROR, logger="streams.runtime.draining"):
        asyncio.run(app._consumer_wait_empty(None, logging.getLogger("t")))
    assert calls == ["first", "fails", "last"]
    [record] = caplog.records
    assert "writing state back" in record.getMessage()
    assert record.exc_info is not None
    assert "store closed" in str(record.exc_info[1])
