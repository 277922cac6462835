"""JSON Schema documents of the event contract, for producers to validate against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streams.contract.decode import DeadLetter
from streams.contract.events import EVENT_ADAPTER, EVENT_MODELS, SCHEMA_VERSION


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema documents (draft 2020-12) by file stem, for producers to validate against."""
    out: dict[str, dict[str, Any]] = {}
    for kind, model in EVENT_MODELS.items():
        out[kind] = model.model_json_schema(by_alias=True, mode="validation")
    out["event"] = EVENT_ADAPTER.json_schema(by_alias=True, mode="validation")
    out["dead-letter"] = DeadLetter.model_json_schema(by_alias=True, mode="serialization")
    for stem, schema in out.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://sentinel.invalid/schemas/v{SCHEMA_VERSION}/{stem}.schema.json"
    return out


def write_schemas(out_dir: Path) -> list[Path]:
    """Write ``<kind>.schema.json`` files into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, schema in json_schemas().items():
        path = out_dir / f"{stem}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
