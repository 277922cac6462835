"""What a local broker runs with: its ``server.properties``, as a dict.

Single-node KRaft (broker and controller in one process), internal topics with one
replica, size-based retention from ``local_broker`` settings, and for ``local_broker.security
= "sasl_ssl"`` a SASL_SSL client listener with SCRAM-SHA-512/-256. Pure (no files, no
processes): :class:`streams.devtools.broker.LocalBroker` writes the result and runs the
broker with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streams.devtools.certs import INTER_BROKER_USER, SCRAM_MECHANISM, SCRAM_MECHANISMS
from streams.settings import LocalBrokerSettings


@dataclass(frozen=True)
class SaslSsl:
    """A secured client listener's material: the inter-broker password, the broker's
    certificate and key (PEM keystore) and the CA it and its clients trust."""

    inter_broker_secret: str
    keystore: Path
    truststore: Path


def server_properties(
    s: LocalBrokerSettings, data_dir: Path, secured: SaslSsl | None
) -> dict[str, str]:
    """The broker's properties; the SASL_SSL ones replace the PLAINTEXT listener's."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{s.host}:{s.controller_port}",
        "listeners": f"PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{s.host}:{s.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        **(sasl_ssl_properties(s, secured) if secured is not None else {}),
        "log.dirs": str(data_dir / "kraft-logs"),
        "num.partitions": "4",
        # Single node: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": str(s.group_initial_rebalance_delay_ms),
        "auto.create.topics.enable": "true",
        # By size by default, not by time: see LocalBrokerSettings.retention_hours.
        "log.retention.ms": (
            str(max(1, round(s.retention_hours * 3_600_000))) if s.retention_hours else "-1"
        ),
        "log.retention.bytes": str(round(s.retention_gb_per_partition * 2**30)),
    }


def sasl_ssl_properties(s: LocalBrokerSettings, secured: SaslSsl) -> dict[str, str]:
    """Properties that make the client listener SASL_SSL with SCRAM-SHA-512/-256.

    The broker talks to itself over the same listener (inter-broker), as
    :data:`INTER_BROKER_USER` with a random password and SCRAM-SHA-512, so that no
    PLAINTEXT data listener is left open. The client's password is not in this file:
    the broker only holds its salted SCRAM forms, in the cluster metadata.

    Client certificates: Kafka ignores the broker-wide ``ssl.client.auth`` on SASL_SSL
    listeners; only the listener-prefixed one applies there (KIP-684, Kafka 3.0+), so
    that is the one set. The broker's own inter-broker connection then presents its
    keystore certificate, which is signed by the same CA and allows client use.
    """
    secret = secured.inter_broker_secret
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{INTER_BROKER_USER}" password="{secret}";'
    )
    jaas_config = {
        f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": jaas
        for mechanism in SCRAM_MECHANISMS
    }
    return {
        "listeners": f"SASL_SSL://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
        "advertised.listeners": f"SASL_SSL://{s.host}:{s.port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        **jaas_config,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(secured.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(secured.truststore),
        "ssl.client.auth": "none",
        "listener.name.sasl_ssl.ssl.client.auth": s.client_auth,
    }
