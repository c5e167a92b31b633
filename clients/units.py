"""File sizes shown to people, one way in the CLI and the TUI: binary units (``B``, ``KiB``,
``MiB``, ``GiB``) of the file's own size (never the padded ciphertext's)."""

from __future__ import annotations

__all__ = ["format_size"]


def format_size(size: int) -> str:
    """``0 B``, ``1023 B``, ``1.0 KiB``, ``68.4 KiB``, ``10.0 MiB``, ``5120.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
