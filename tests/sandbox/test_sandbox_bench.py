"""`python -m sandbox.bench --json` runs end to end (tiny run counts) and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_reports_all_modes_and_targets():
    out = subprocess.run(
        [sys.executable, "-m", "sandbox.bench", "--json", "--scale", "0.01"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    report = json.loads(out)
    for key in ("warm_sympy_per_s", "cold_sympy_per_s", "warm_trivial_per_s_per_jail", "warm_p99_ms",
                "jail_rss_mb", "warm_cpu_ms_per_exec", "ratio_warm_vs_cold_sympy", "ratio_warm_vs_plain_trivial"):
        assert report[key] > 0, key
    assert set(report["modes"]) == {"warm1", "warm2", "cold", "plain"}
    for figures in report["modes"].values():
        assert set(figures) == {"trivial", "sympy", "numpy"}
    assert set(report["targets"]) == {"warm_vs_cold_sympy_>=30x", "warm_trivial_per_jail_>=250/s", "warm_p99_<=20ms"}
