"""``sentinel`` subcommands registered by this module (see :func:`register`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``sentinel`` subparsers ``sub``.

    Each subcommand sets ``handler`` (a function taking the parsed
    :class:`argparse.Namespace` and returning an exit code) with ``set_defaults``.
    """
    _ = (sub, argparse)
