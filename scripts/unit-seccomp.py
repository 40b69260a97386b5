#!/usr/bin/python3
"""Runs a command under the system call filter of a systemd unit, as systemd would install it.

Only `SystemCallFilter=` is applied: not the unit's other sandboxing (`RestrictRealtime=`,
`MemoryDenyWriteExecute=`, `RestrictAddressFamilies=`, ...), which systemd enforces apart.

Usage: scripts/unit-seccomp.py UNIT_FILE -- COMMAND [ARG...]

Reads the unit's `SystemCallFilter=` lines in order (the first decides whether the list allows
or denies; later lines of the same kind add to it, of the other kind take away from it, as
systemd.exec(5) says), expands `@group` names with `systemd-analyze syscall-filter`, loads the
filter with libseccomp (python3-seccomp) and execs COMMAND in this process.

Any call outside the allowed list kills the process (SIGSYS), even where the unit sets
`SystemCallErrorNumber=`: a check run under this wants to see a refused call as a dead
process, not as an error the program may quietly absorb.
"""

import os
import subprocess
import sys

import seccomp


def group(name, seen):
    """The system calls of `name` (a call, or an @group expanded recursively)."""
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    calls = set()
    for line in listing[1:]:  # the first line repeats the group's name
        entry = line.strip()
        if entry and not entry.startswith("#"):
            calls |= group(entry, seen)
    return calls


def allowed_calls(unit_path):
    """The calls the unit allows: (set, True), or the calls it denies: (set, False)."""
    calls, allow_list = set(), None
    for line in open(unit_path, encoding="utf-8"):
        line = line.strip()
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1].strip()
        if not value:
            # An empty assignment resets the list.
            calls, allow_list = set(), None
            continue
        deny = value.startswith("~")
        # `name:errno` gives one call its own error; here every refused call kills anyway.
        names = [name.split(":", 1)[0] for name in value.lstrip("~").split()]
        expanded = set().union(*(group(name, set()) for name in names)) if names else set()
        if allow_list is None:
            allow_list = not deny
            # systemd adds @default to every allow list.
            calls = expanded | (group("@default", set()) if allow_list else set())
        elif deny == (not allow_list):
            calls |= expanded
        else:
            calls -= expanded
    if allow_list is None:
        sys.exit(f"{unit_path}: no SystemCallFilter= line")
    return calls, allow_list


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    calls, allow_list = allowed_calls(sys.argv[1])
    if allow_list:
        rules = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
        action = seccomp.ALLOW
    else:
        rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        action = seccomp.KILL_PROCESS
    for call in sorted(calls):
        # A name this architecture does not have resolves below zero; systemd skips those too.
        if seccomp.resolve_syscall(seccomp.Arch(), call) >= 0:
            rules.add_rule(action, call)
    rules.load()
    os.execv(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    main()
