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
