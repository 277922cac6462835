"""A minimal faust worker for the smoke test: upper-cases records from one topic to another.

Built with the service's own app factory and settings (read from SENTINEL_* variables).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import faust

from streams.runtime.app import create_app
from streams.settings import load_settings


def main(source: str, sink: str) -> None:
    app = create_app(load_settings())
    src = app.topic(source, value_serializer="raw")
    dst = app.topic(sink, value_serializer="raw")

    @app.agent(src)
    async def upper(stream: AsyncIterator[bytes]) -> None:
        async for value in stream:
            await dst.send(value=value.upper())

    faust.Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
