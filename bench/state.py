"""Memory and changelog bytes per detector key, and the /metrics detector render time.

    .venv/bin/python bench/state.py [--keys 1000 10000 100000] [--store rocksdb|memory]

For each size N, in a fresh process: N distinct tenants (one simulated observation each,
cycled over the simulator's traffic) go through the detect stage
(:class:`streams.pipeline.detect.Detect`, state written every batch), with
``max_label_values`` raised to N so nothing folds. The store is the worker's: ``rocksdb``
(the default ``worker.store``: a real RocksDB via ``rocksdict`` holding each value as the
encoded bytes faust's table writes, so the process holds the live detector sets once and
RocksDB the serialized state) or ``memory`` (``memory://``: a dict of the JSON-compatible
values, as replay and tests run it; state is then held twice, live and as the dict).

The issue 17 goal is per (model, version, segment, detector) key, i.e. per *detector*; a
detector-set key (one (model, version, segment) cut) holds several detectors. Printed:

- keys: detector-set keys (model, version or segment) and detectors in them;
- RSS per key and per detector: growth of the process's resident set
  (``/proc/self/status`` VmRSS) from before the run to after it, divided by the
  detector-set keys and by the detectors created, in bytes;
- changelog bytes per key and per detector: each stored value as the tables encode it
  (``state.encode``: compressed JSON) plus its key (what the faust changelog carries per
  key), in bytes;
- /metrics: time to collect and render the detector families (sampled scan, exact key
  counts) with the live keys, in ms (median of 20 renders).

``--flush HOURS`` measures instead what a flush of mature keys costs (issue 14,
reliability at volume): ``HOURS`` of one simulated service are replayed (every key fits
its references), then every live set is written as the worker's flush writes it, best of
five, in two ways in the same run: each value in place (the baseline, how every flush
wrote before frozen values were stored apart) and through
:class:`streams.pipeline.frozen.FrozenStore` after its first flush (the steady state:
the references were written once). Printed: keys, the flush's time (``to_json``, the JSON
text, zlib; in ms) and the bytes it sends to the changelog, each with its ratio.

Figures are printed, never asserted (the machine is shared); see docs/validation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alerting.clock import SYSTEM_CLOCK  # noqa: E402
from alerting.playbooks import load_playbooks  # noqa: E402
from alerting.policy import load_policy  # noqa: E402
from streams.contract.decode import Coordinates, DeadLetter, decode  # noqa: E402
from streams.devtools.scenario import Scenario  # noqa: E402
from streams.devtools.simulate import Simulator  # noqa: E402
from streams.pipeline import state  # noqa: E402
from streams.pipeline.detect import Detect  # noqa: E402
from streams.pipeline.detectorset import DetectorSet  # noqa: E402
from streams.pipeline.frozen import FrozenStore, is_frozen_key  # noqa: E402
from streams.pipeline.join import Joiner  # noqa: E402
from streams.pipeline.observation import Observation  # noqa: E402
from streams.pipeline.replay import REPLAY_LIMITS, Pipeline, replay_lines  # noqa: E402
from streams.runtime.observability import Observability, render  # noqa: E402
from streams.settings import load_settings  # noqa: E402

BATCH = 1000


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RocksStore(MutableMapping[str, Any]):
    """A RocksDB-backed store of values in the tables' encoding (``state.encode``): what
    faust's ``rocksdb://`` table store does per key (values serialized on write, read back
    on get; no Python copy kept)."""

    def __init__(self, path: str) -> None:
        from rocksdict import Rdict

        self.db = Rdict(path)
        self._n = 0

    def __getitem__(self, key: str) -> Any:
        raw = self.db.get(key.encode())
        if raw is None:
            raise KeyError(key)
        return state.decode(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        k = key.encode()
        if self.db.get(k) is None:
            self._n += 1
        self.db.put(k, state.encode(value))

    def __delitem__(self, key: str) -> None:
        if self.db.get(key.encode()) is None:
            raise KeyError(key)
        self.db.delete(key.encode())
        self._n -= 1

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self.db.keys())  # noqa: SIM118 (an Rdict, not a dict)

    def __len__(self) -> int:
        return self._n


def _base(n: int) -> list[Observation]:
    settings = load_settings(env={})
    joiner = Joiner(settings.detection, {})
    out: list[Observation] = []
    for offset, line in enumerate(Simulator(Scenario(seed=3, duration=timedelta(hours=2))).lines()):
        coords = Coordinates("t", 0, offset)
        event = decode(line.encode(), coords, now=datetime.now(UTC), limits=REPLAY_LIMITS)
        if not isinstance(event, DeadLetter):
            out.extend(joiner.process(event, coords))
        if len(out) >= n:
            break
    return out[:n]


def measure(n: int, store_kind: str = "rocksdb") -> dict[str, Any]:
    """One size, in this process."""
    settings = load_settings(env={})
    det = settings.detection.model_copy(update={"max_label_values": max(n, 1)})
    base = _base(min(n, 20_000))
    tmp = tempfile.TemporaryDirectory(prefix="sentinel-bench-state-")
    store: MutableMapping[str, Any] = (
        RocksStore(tmp.name + "/db") if store_kind == "rocksdb" else {}
    )
    gc.collect()
    rss0 = _rss_bytes()
    detect = Detect(
        det, load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir), store, {}
    )
    t0 = time.perf_counter()
    batch: list[Observation] = []
    for i in range(n):
        obs = base[i % len(base)]
        batch.append(dataclasses.replace(obs, segment={**obs.segment, "tenant": f"bench-{i}"}))
        if len(batch) >= BATCH:
            detect.process(batch)
            batch = []
    if batch:
        detect.process(batch)
    run_s = time.perf_counter() - t0
    gc.collect()
    rss1 = _rss_bytes()
    keys = sum(1 for k in store if not is_frozen_key(k))
    detectors = 0
    changelog = 0
    for k, v in store.items():
        detectors += 0 if is_frozen_key(k) else len(v["d"])
        changelog += len(k.encode()) + len(state.encode(v))
    obs_view = Observability(
        SimpleNamespace(), SimpleNamespace(detect=detect), SYSTEM_CLOCK, detector_scan_interval_s=0
    )
    times = []
    for _ in range(20):
        t = time.perf_counter()
        text = render(obs_view.detectors.families())
        times.append(time.perf_counter() - t)
    tmp.cleanup()
    return {
        "store": store_kind,
        "tenants": n,
        "keys": keys,
        "detectors": detectors,
        "run_s": run_s,
        "rss_per_key_b": (rss1 - rss0) / keys,
        "rss_per_detector_b": (rss1 - rss0) / max(detectors, 1),
        "changelog_per_key_b": changelog / keys,
        "changelog_per_detector_b": changelog / max(detectors, 1),
        "metrics_ms": statistics.median(times) * 1000,
        "metrics_bytes": len(text),
    }


class ChangelogBytes(dict[str, Any]):
    """A store that encodes each value as the tables do and counts the bytes sent (key
    and value; a delete sends the key alone, a tombstone)."""

    sent = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.sent += len(key.encode()) + len(state.encode(value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.sent += len(key.encode())
        super().__delitem__(key)


def _best(flush: Any, repeats: int = 5) -> tuple[float, int]:
    """The fastest of ``repeats`` flushes (seconds) and the bytes one sends."""
    times, sent = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        sent = flush()
        times.append(time.perf_counter() - t)
    return min(times), sent


def measure_flush(hours: float) -> None:
    """Print the flush of every live set after ``hours`` of simulated traffic, each value
    in place against frozen values stored once (see the module docstring)."""
    settings = load_settings(env={})
    lines = [
        line.encode()
        for line in Simulator(Scenario(seed=5, duration=timedelta(hours=hours))).lines()
    ]
    print(f"replaying {len(lines):,} simulated lines ({hours:g} h) ...", flush=True)
    pipeline = Pipeline(settings)
    replay_lines(lines, settings, pipeline=pipeline)
    sets: dict[str, DetectorSet] = dict(pipeline.detect.live_sets.live)

    def inline() -> int:
        store = ChangelogBytes()
        for kid, ds in sets.items():
            store[kid] = state.stamp("detectors", ds.to_json())
        return store.sent

    frozen_store = ChangelogBytes()
    frozen = FrozenStore(frozen_store)

    def apart() -> int:
        before = frozen_store.sent
        for kid, ds in sets.items():
            frozen.write(kid, state.stamp("detectors", ds.to_json()))
        return frozen_store.sent - before

    first = apart()  # writes the references; the flushes timed below are the steady state
    base_s, base_b = _best(inline)
    new_s, new_b = _best(apart)
    print(f"{len(sets)} keys; the first flush with frozen values apart sent {first:,} B")
    print(f"{'flush':<32} {'time':>9} {'ratio':>6} {'bytes sent':>12} {'ratio':>6}")
    base = "every value in place (baseline)"
    print(f"{base:<32} {base_s * 1e3:>6.0f} ms {1:>6.2f} {base_b:>12,} {1:>6.2f}")
    print(
        f"{'frozen values stored once':<32} {new_s * 1e3:>6.0f} ms {new_s / base_s:>6.2f} "
        f"{new_b:>12,} {new_b / base_b:>6.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument(
        "--store",
        choices=("rocksdb", "memory"),
        default="rocksdb",
        help="the worker's store to model (default rocksdb, the worker default)",
    )
    parser.add_argument(
        "--flush",
        type=float,
        metavar="HOURS",
        help="measure a flush of mature keys after HOURS of simulated traffic instead",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flush is not None:
        if args.flush <= 0:
            parser.error("--flush needs a positive number of hours")
        measure_flush(args.flush)
        return 0
    if args.one is not None:
        print(json.dumps(measure(args.one, args.store)))
        return 0
    print(f"store: {args.store}://")
    print(
        f"{'tenants':>8} {'keys':>8} {'detectors':>9} {'RSS/key':>10} {'RSS/detector':>13} "
        f"{'changelog/key':>14} {'changelog/detector':>18} {'/metrics':>10} {'run':>8}"
    )
    for n in args.keys:
        # A fresh process per size: RSS growth is not hidden by memory freed earlier.
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--store", args.store],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"the run with {n} tenants failed:\n{out.stderr}", file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['tenants']:>8} {r['keys']:>8} {r['detectors']:>9} "
            f"{r['rss_per_key_b']:>8.0f} B {r['rss_per_detector_b']:>11.0f} B "
            f"{r['changelog_per_key_b']:>12.0f} B "
            f"{r['changelog_per_detector_b']:>16.0f} B {r['metrics_ms']:>7.1f} ms "
            f"{r['run_s']:>6.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
