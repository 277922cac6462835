"""The Kafka distribution a local broker runs: a Java runtime new enough for Kafka 4.x,
and the broker's jars, fetched once from Maven Central into a cache.

Apart from :mod:`streams.devtools.broker` (which starts and stops a broker from them)
because ``sentinel kafka fetch`` and the test tools need them without a broker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from streams.devtools.errors import BrokerError

Log = Callable[[str], None]

MIN_JAVA = 17

KAFKA_RESOURCES = "streams.devtools.kafka"
"""The package holding the Maven pom and the log4j2 configuration."""


def no_log(_: str) -> None:
    """The default :data:`Log`: report nothing."""
    return None


def java_executable() -> str:
    """The ``java`` to use: ``$JAVA_HOME/bin/java`` when set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker, and no 'java' was found "
            "on PATH (nor in JAVA_HOME). Install a JDK (e.g. 'apt-get install "
            "openjdk-17-jre-headless') or point SENTINEL_BROKER at an existing broker."
        )
    return found


def java_major_version(java: str) -> int:
    """Parse the major version from ``java -version`` (which prints to stderr)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"could not read the Java version from {java!r}: {out.stderr.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """Return a usable java executable or raise a clear error."""
    java = java_executable()
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerError(
            f"Kafka 4.x needs Java {MIN_JAVA}+, but {java} is Java {major}. "
            "Set JAVA_HOME to a newer JDK."
        )
    return java


def fetch_kafka(version: str, cache_dir: Path, log: Log = no_log) -> Path:
    """Resolve the Kafka broker jars with Maven into ``cache_dir/<version>/libs``.

    Idempotent: a complete cache (marked by a ``.complete`` file) is reused without
    calling Maven. Returns the libs directory.
    """
    libs = cache_dir.expanduser() / version / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven ('mvn') is needed once to fetch the Kafka jars from Maven Central, and it "
            "is not on PATH. Install it (e.g. 'apt-get install maven') or point "
            "SENTINEL_BROKER at an existing broker."
        )
    log(f"fetching Apache Kafka {version} jars from Maven Central into {libs} ...")
    template = resources.files(KAFKA_RESOURCES).joinpath("pom.xml").read_text(encoding="utf-8")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = maven_copy_dependencies(
        mvn, template.replace("@KAFKA_VERSION@", version), partial, "sentinel-kafka-pom-"
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerError(f"Maven could not fetch Kafka {version}:\n{tail}")
    jars = sorted(partial.glob("*.jar"))
    if not any(j.name.startswith(f"kafka_2.13-{version}") for j in jars):
        raise BrokerError(f"Maven finished but kafka_2.13-{version}.jar is missing in {partial}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker.write_text(f"{len(jars)} jars\n", encoding="utf-8")
    log(f"fetched {len(jars)} jars ({_dir_mib(libs):.1f} MiB)")
    return libs


def maven_copy_dependencies(
    mvn: str, pom_text: str, out_dir: Path, tmp_prefix: str
) -> subprocess.CompletedProcess[str]:
    """Run Maven's ``dependency:copy-dependencies`` (runtime scope) on ``pom_text``, copying
    the jars into ``out_dir``; the pom lives in a temporary directory. The caller checks
    the result (its output holds Maven's errors)."""
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(pom_text, encoding="utf-8")
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20
