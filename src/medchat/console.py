"""The single console through which medchat talks to people (stderr, so stdout stays parseable)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)
