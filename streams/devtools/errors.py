"""The local development tools' error."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""
