#!/usr/bin/env python3
"""Runs a command and reports its wall time, peak resident memory, and peak anonymous
memory (memory not backed by a file: what a copy of the model would show up as).

  scripts/measure.py OUT.json -- CMD ARGS...

Peak RSS is the kernel's own high-water mark (getrusage); peak anonymous memory is sampled
from /proc/PID/status (RssAnon) every 10 ms, so a spike shorter than that can be missed.
The command's exit code is passed on.
"""
import json
import resource
import subprocess
import sys
import time


def rss_anon_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    out, sep, *cmd = sys.argv[1:]
    assert sep == "--", __doc__
    start = time.monotonic()
    p = subprocess.Popen(cmd)
    peak_anon = 0
    while p.poll() is None:
        peak_anon = max(peak_anon, rss_anon_kb(p.pid))
        time.sleep(0.01)
    wall = time.monotonic() - start
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "w") as f:
        json.dump({"seconds": round(wall, 2), "peak_rss_mib": round(peak_rss / 1024),
                   "peak_anon_mib": round(peak_anon / 1024), "exit": p.returncode}, f)
    sys.exit(p.returncode)


main()
