"""`sentinel kafka up|status|down` manage a real broker on chosen ports and directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.broker import free_port
from streams.cli import main

pytestmark = pytest.mark.integration


def test_up_status_down_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, ctl = free_port(), free_port()
    args = ["--port", str(port), "--controller-port", str(ctl), "--data-dir", str(tmp_path)]
    try:
        assert main(["kafka", "up", *args]) == 0
        assert f"SENTINEL_BROKER=kafka://127.0.0.1:{port}" in capsys.readouterr().out
        assert main(["kafka", "status", *args]) == 0
        assert "accepting connections" in capsys.readouterr().out
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
        meta = producer.send("cycle", b"x").get(timeout=30)
        producer.close()
        assert meta.offset == 0
        # A second `up` finds the running broker instead of starting another.
        assert main(["kafka", "up", *args]) == 0
        assert "already running" in capsys.readouterr().err
    finally:
        assert main(["kafka", "down", *args]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["kafka", "status", *args]) == 3
    assert not (tmp_path / "broker.pid").exists()
