"""Kafka's own command-line clients (``org.apache.kafka:kafka-tools``) for the tests.

The codec tests publish with ``org.apache.kafka.tools.ConsoleProducer``, the Java
producer a Kafka user runs, not one written here. Its jars come from Maven Central as
the broker's do (:func:`streams.devtools.kafka_dist.fetch_kafka`), into
``<cache_dir>/<version>/tools-libs``, once; the same version as the broker.

    python -m tests.tools.kafka_tools      # fetch (CI does this before the tests)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from streams.devtools.errors import BrokerError
from streams.devtools.kafka_dist import check_java, maven_copy_dependencies
from streams.settings import LocalBrokerSettings

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.sentinel</groupId>
  <artifactId>sentinel-kafka-tools</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>@KAFKA_VERSION@</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>2.0.17</version>
    </dependency>
  </dependencies>
</project>
"""


def fetch_kafka_tools(version: str, cache_dir: Path) -> Path:
    """Resolve ``kafka-tools`` and its runtime dependencies into ``tools-libs``; idempotent
    (a ``.complete`` marker). Returns the directory of jars."""
    libs = cache_dir.expanduser() / version / "tools-libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is needed once to fetch kafka-tools from Maven Central")
    partial = libs.with_name("tools-libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = maven_copy_dependencies(
        mvn, _POM.replace("@KAFKA_VERSION@", version), partial, "sentinel-kafka-tools-"
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerError(f"Maven could not fetch kafka-tools {version}:\n{tail}")
    if not any(p.name.startswith(f"kafka-tools-{version}") for p in partial.glob("*.jar")):
        raise BrokerError(f"Maven finished but kafka-tools-{version}.jar is missing")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker.write_text("complete\n", encoding="utf-8")
    return libs


def console_producer(
    libs: Path, bootstrap: str, topic: str, *, compression: str, keyed: bool = False
) -> list[str]:
    """The command line of Kafka's console producer (records are lines on its stdin;
    ``keyed``: ``key<TAB>value``), publishing with ``compression`` (none, gzip, snappy,
    lz4 or zstd) and ``acks=all``."""
    cmd = [
        check_java(),
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--compression-codec",
        compression,
        "--request-required-acks",
        "all",
    ]
    if keyed:
        cmd += ["--property", "parse.key=true"]
    return cmd


def main() -> None:
    settings = LocalBrokerSettings()
    libs = fetch_kafka_tools(settings.kafka_version, settings.cache_dir)
    print(f"kafka-tools {settings.kafka_version} jars in {libs}")


if __name__ == "__main__":
    main()
