"""Output paths named on the command line (`--plot FILE`, `--plot DIR`), checked before a command
does any work: a path no file can be written at is bad usage (exit 2), said in one line, and is
never found out after a report was already printed. An error while writing (a full disk) is
still a runtime failure (exit 1) for the command to report."""

from __future__ import annotations

import os
from pathlib import Path


def file_problem(path: Path) -> str | None:
    """Why no file can be written at `path`, or None when it looks writable."""
    try:
        if path.is_dir():
            return "is a directory"
        parent = path.parent
        if not parent.exists():
            return f"no such directory: {parent}"
        if not parent.is_dir():
            return f"not a directory: {parent}"
        if path.exists():
            return None if os.access(path, os.W_OK) else "not writable"
        return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot write in {parent}"
    except OSError as exc:  # e.g. a directory on the way that may not be searched
        return f"cannot be checked: {exc.strerror or exc}"


PLOT_FORMATS = frozenset({"png", "pdf", "svg", "svgz", "ps", "eps", "jpg", "jpeg", "tif", "tiff", "webp",
                          "raw", "rgba", "pgf"})
"""File name suffixes matplotlib's `savefig` writes (no suffix: PNG)."""


def plot_problem(path: Path) -> str | None:
    """`file_problem`, and a suffix that names no image format matplotlib writes (`plan.txt` was
    found out by `savefig` after the report: a traceback, exit 1)."""
    problem = file_problem(path)
    suffix = path.suffix.lstrip(".").lower()
    if problem is None and suffix and suffix not in PLOT_FORMATS:
        problem = f"not an image format matplotlib writes: .{suffix} (use {', '.join(sorted(PLOT_FORMATS))})"
    return problem


def directory_problem(path: Path) -> str | None:
    """Why `path` is not a directory files can be written in, and cannot be made one (with its
    parents), or None."""
    try:
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return "exists and is not a directory" if existing == path else f"not a directory: {existing}"
        if os.access(existing, os.W_OK | os.X_OK):
            return None
        return "not writable" if existing == path else f"cannot create it in {existing}"
    except OSError as exc:
        return f"cannot be checked: {exc.strerror or exc}"
