"""The ``sentinel`` command line (:mod:`streams.cli.main`).

The entry point checks first that the service's dependencies are installed: the base
install of the package is only the producer SDK, and a user who runs ``sentinel`` there
gets a one-line answer instead of an import traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

SERVICE_MODULES = ("faust", "pydantic_settings", "numpy", "scipy")
"""Imports the service needs beyond the SDK (the ``service`` extra)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``sentinel``: run the command line, or say how to install the service."""
    missing = [name for name in SERVICE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            "sentinel: this install has only the producer SDK (missing: "
            f"{', '.join(missing)}); install the service with "
            "pip install 'sentinel-ai-incidents[service]', or in a checkout of the "
            "repository with make install",
            file=sys.stderr,
        )
        return 1
    from streams.cli.main import main as cli_main

    return cli_main(argv)
