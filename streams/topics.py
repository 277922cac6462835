"""Create the service's topics with the configured partition count before work starts.

A topic auto-created by a producer gets the broker's default partition count, which may
differ from ``kafka.topic_partitions``; creating them up front keeps the layout the
configuration says. The control topic is compacted: it holds the current containment
state per model; the silences topic has a single partition, so that every worker reads
all silences in order.
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from alerting.silences import silences_topic
from streams.security import kafka_python_kwargs
from streams.settings import Settings


def ensure_topics(settings: Settings, bootstrap: list[str]) -> list[str]:
    """Create missing service topics; return the names created."""
    t = settings.topics
    k = settings.kafka
    wanted = {
        t.inputs: {},
        t.outputs: {},
        t.feedback: {},
        t.evaluations: {},
        t.alerts: {},
        t.dead_letter: {},
        t.control: {"cleanup.policy": "compact"},
    }
    single = {silences_topic(t.control): {"cleanup.policy": "compact"}}
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="sentinel-admin",
        **kafka_python_kwargs(settings.kafka.security),
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, k.topic_partitions, k.replication_factor, topic_configs=configs)
            for name, configs in wanted.items()
            if name not in existing
        ] + [
            # Silences: one partition, so every worker reads them all, in order.
            NewTopic(name, 1, k.replication_factor, topic_configs=configs)
            for name, configs in single.items()
            if name not in existing
        ]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another worker created it meanwhile
        return created
    finally:
        admin.close()
