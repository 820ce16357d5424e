"""Peak resident memory of this process, measured so that a parent's size cannot leak in.

`getrusage(RUSAGE_SELF).ru_maxrss` is preserved across execve(2): a process started by a
1.1 GB parent (say a long pytest run) reports at least 1.1 GB, whatever it used itself.
Linux's VmHWM is the high-water mark of this process's own address space, which exec
replaces, so it starts from zero. Elsewhere ru_maxrss is the best there is.
"""
from __future__ import annotations

import resource
import sys


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (VmHWM where Linux gives it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB
