"""Runs benchmark code in a fresh Python process and reports its own peak memory."""

import json
import subprocess
import sys

# Appended to the child's code, which fills a dict `result`: adds the child's
# peak resident memory (VmHWM; ru_maxrss would carry the parent's over exec).
_REPORT = """
import json as _json
_peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
result["peak_rss"] = int(_peak.split()[1]) * 1024
print(_json.dumps(result))
"""


def run_measured(code, args, cwd, env):
    """Runs `python -c code args...`; returns its `result` dict with `peak_rss` (bytes)."""
    out = subprocess.run(
        [sys.executable, "-c", code + _REPORT, *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
