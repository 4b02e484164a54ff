"""Exec a command under the system-call policy of a systemd unit, as far as it can be applied
without systemd: the unit's `SystemCallFilter=` lines (an allow-list, then `~` removals; groups
expanded by `systemd-analyze syscall-filter`), `SystemCallErrorNumber=`, and
`MemoryDenyWriteExecute=yes` (the kernel's PR_SET_MDWE, which refuses the same W+X mappings).

    /usr/bin/python3 sandbox_exec.py UNIT_FILE COMMAND [ARGS...]

Runs with the interpreter that has Debian's `python3-seccomp` (libseccomp bindings); the filter
survives `execve`, so COMMAND (e.g. the venv's `quotapilot`) runs under it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import seccomp  # type: ignore[import-not-found]

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


@cache
def expand(name: str) -> frozenset[str]:
    """A syscall group (`@system-service`) as the set of syscall names systemd puts in it."""
    if not name.startswith("@"):
        return frozenset({name})
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             check=True).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry)
    return frozenset(names)


def unit_policy(unit: str) -> tuple[set[str], int, bool]:
    """(allowed syscalls, errno for the rest, MemoryDenyWriteExecute) from the unit file."""
    allowed: set[str] | None = None
    error_number, mdwe = errno.EPERM, False
    for raw in Path(unit).read_text(encoding="utf-8").splitlines():
        key, _, value = raw.strip().partition("=")
        if key == "SystemCallFilter":
            deny = value.startswith("~")
            names = set().union(*(expand(n) for n in value.lstrip("~").split()))
            if allowed is None:
                if deny:
                    raise SystemExit("sandbox_exec: only allow-list filters are supported")
                allowed = names
            elif deny:
                allowed -= names
            else:
                allowed |= names
        elif key == "SystemCallErrorNumber":
            error_number = getattr(errno, value)
        elif key == "MemoryDenyWriteExecute":
            mdwe = value in ("yes", "true", "1")
    if allowed is None:
        raise SystemExit("sandbox_exec: the unit has no SystemCallFilter=")
    return allowed, error_number, mdwe


def main() -> None:
    unit, command = sys.argv[1], sys.argv[2:]
    allowed, error_number, mdwe = unit_policy(unit)
    policy = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error_number))
    for name in sorted(allowed):
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # a name this libseccomp does not know
            policy.add_rule(seccomp.ALLOW, name)
    if mdwe and ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise SystemExit(f"sandbox_exec: PR_SET_MDWE failed: {os.strerror(ctypes.get_errno())}")
    policy.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
