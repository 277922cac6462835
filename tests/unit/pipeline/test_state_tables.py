"""The worker's detectors and engines tables write and recover through the state codec,
which reads records back as bytes for the pipeline to decode when it uses them.

faust decodes a changelog during recovery with the codec of the table's changelog *topic*,
made when the table is registered; a codec set on the table afterwards alone wrote
compressed records that recovery then read as JSON (found by ``test_failover``).
"""

from __future__ import annotations

from streams.pipeline import state
from streams.runtime.agents import StateCodec, register_pipeline
from streams.runtime.app import create_app
from streams.settings import load_settings


def test_state_tables_write_and_recover_with_the_state_codec() -> None:
    settings = load_settings(env={})
    app = create_app(settings, broker_url="kafka://localhost:1")  # never connects
    register_pipeline(app, settings)
    tables = {t.name: t for t in app.tables.values()}
    value = {"d": {"x": {"state": [0.5] * 50}}, state.VERSION_KEY: 4}
    for name in ("detectors", "engines"):
        topic = tables[name].changelog_topic
        assert isinstance(tables[name].value_serializer, StateCodec)
        raw = app.serializers.dumps_value(None, value, serializer=topic.value_serializer)
        assert raw.startswith(state.COMPRESSED)  # what the changelog carries ...
        # ... which recovery and a standby replica read back with the topic's codec as
        # bytes, and the pipeline decodes when it reads the key
        back = app.serializers.loads_value(None, raw, serializer=topic.value_serializer)
        assert back == raw
        assert state.restore("detectors", back, lambda data: data) == value
        # bytes read back and written again go out unchanged
        assert app.serializers.dumps_value(None, back, serializer=topic.value_serializer) == raw
    assert tables["join"].changelog_topic.value_serializer == "json"


def test_standby_replicas_only_where_they_spare_a_new_owner_the_changelog() -> None:
    for store, setting, replicas in (
        ("rocksdb://", 1, 1),
        ("rocksdb://", 0, 0),
        ("rocksdb://", 2, 2),
        ("memory://", 1, 0),
    ):
        overrides = {"worker.store": store, "worker.standby_replicas": setting}
        settings = load_settings(env={}, overrides=overrides)
        app = create_app(settings, broker_url="kafka://localhost:1")  # never connects
        assert app.conf.table_standby_replicas == replicas
