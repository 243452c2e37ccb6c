#!/usr/bin/python3
"""Runs a program under the seccomp part of a systemd unit's sandbox, the way
systemd applies it (systemd 252): SystemCallFilter= (groups expanded by
`systemd-analyze syscall-filter`) with SystemCallErrorNumber=,
SystemCallArchitectures=native, RestrictAddressFamilies=,
MemoryDenyWriteExecute= and RestrictNamespaces=. The caller drops the user,
the capabilities and sets no_new_privs (setpriv) before this runs.

Usage: sandbox_exec.py UNIT_FILE PROGRAM [ARGS...]
Needs Debian's python3-seccomp (libseccomp's Python binding)."""

import errno
import os
import socket
import subprocess
import sys

import seccomp

# Always allowed by systemd when a SystemCallFilter= allow-list is in use.
ALWAYS_ALLOWED = ["execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"]


def unit_settings(path):
    settings = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         check=True, capture_output=True, text=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("#") or not line.strip():
            current = None if not line.strip() else current
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names, groups, seen=None):
    seen = set() if seen is None else seen
    result = set()
    for name in names:
        if name.startswith("@"):
            if name in seen:
                continue
            seen.add(name)
            result |= expand(groups[name], groups, seen)
        else:
            result.add(name)
    return result


def add_rule(f, action, name, *args):
    try:
        f.add_rule(action, name, *args)
    except (RuntimeError, ValueError, OSError):
        pass  # not a system call of this architecture


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    unit, argv = sys.argv[1], sys.argv[2:]
    settings = unit_settings(unit)
    groups = syscall_groups()
    filters = []

    # SystemCallFilter=: the first line decides allow- or deny-list; later
    # lines starting with ~ take calls out of an allow-list.
    lines = settings.get("SystemCallFilter", [])
    if lines:
        error = settings.get("SystemCallErrorNumber", [None])[-1]
        deny = seccomp.ERRNO(getattr(errno, error)) if error else seccomp.KILL_PROCESS
        allowed = set(ALWAYS_ALLOWED)
        if lines[0].startswith("~"):
            sys.exit("sandbox_exec.py: only an allow-list SystemCallFilter= is supported")
        for value in lines:
            names = expand(value.lstrip("~").split(), groups)
            allowed = allowed - names if value.startswith("~") else allowed | names
        f = seccomp.SyscallFilter(defaction=deny)
        for name in sorted(allowed):
            add_rule(f, seccomp.ALLOW, name)
        filters.append(f)

    # RestrictAddressFamilies=: socket() with another family fails.
    families = settings.get("RestrictAddressFamilies", [])
    if families:
        keep = {getattr(socket, name) for name in families[-1].split()}
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for family in range(0, 64):
            if family not in keep:
                add_rule(f, seccomp.ERRNO(errno.EAFNOSUPPORT), "socket",
                         seccomp.Arg(0, seccomp.EQ, family))
        filters.append(f)

    # MemoryDenyWriteExecute=: no memory that is writable and executable, no
    # executable memory made later (systemd's seccomp rules).
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        prot_exec, prot_write, shm_exec = 0x4, 0x2, 0o100000
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        eperm = seccomp.ERRNO(errno.EPERM)
        both = prot_exec | prot_write
        add_rule(f, eperm, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
        add_rule(f, eperm, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, prot_exec, prot_exec))
        add_rule(f, eperm, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, prot_exec, prot_exec))
        add_rule(f, eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, shm_exec, shm_exec))
        filters.append(f)

    # RestrictNamespaces=yes: no new namespaces.
    if settings.get("RestrictNamespaces", ["no"])[-1] == "yes":
        namespaces = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        eperm = seccomp.ERRNO(errno.EPERM)
        add_rule(f, eperm, "setns")
        add_rule(f, eperm, "unshare")
        for bit in [b for b in range(32) if namespaces & (1 << b)]:
            add_rule(f, eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, 1 << bit, 1 << bit))
        filters.append(f)

    # The allow-list last: it does not allow seccomp() itself.
    for f in reversed(filters):
        f.load()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
