"""Benchmark: warm jail pool (1 and 2 jails) vs one nsjail per execution vs plain `python -c`.

    python -m sandbox.bench            # table
    python -m sandbox.bench --json     # one JSON object

Throughput is executions/s over a batch of identical snippets; latency is per execution (for the
pool: the round trip to a free jail, queueing excluded). CPU ms/exec counts every process
involved: this one, nsjail, the jail's PID 1 and its snippet processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable

from sandbox.cold import ColdJailRunner
from sandbox.config import SandboxConfig
from sandbox.metrics import percentile
from sandbox.pool import WarmJailPool
from sandbox.result import ExecutionResult

SNIPPETS = {
    "trivial": ("print(6*7)", "42\n"),
    "sympy": ("import sympy; print(sympy.factorint(2**64-1))", "{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n"),
    "numpy": ("import numpy as np; print(round(float(np.linalg.det(np.arange(9.).reshape(3, 3) + np.eye(3))), 6))", "-5.0\n"),
}
# Executions per (mode, snippet): processes per execution cost ~30x more, so fewer of those.
WARM_RUNS, COLD_RUNS = 1000, 30
TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process and its reaped children (utime, stime, cutime, cstime)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def _own_cpu_s() -> float:
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _summary(runs: int, wall_s: float, latencies_s: list[float], cpu_s: float) -> dict[str, float]:
    ordered = sorted(x * 1000 for x in latencies_s)
    return {
        "per_s": runs / wall_s,
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "cpu_ms_per_exec": cpu_s * 1000 / runs,
    }


def _check(results: list[ExecutionResult], expected: str, mode: str) -> None:
    bad = [r for r in results if r.stdout != expected]
    if bad:
        raise RuntimeError(f"{mode}: {len(bad)} wrong results, e.g. {bad[0]}")


def bench_warm(cfg: SandboxConfig, jails: int, runs: int) -> tuple[dict, dict]:
    """{snippet: summary} for a warm pool, and the memory of one jail's PID 1."""
    out = {}
    with WarmJailPool(dataclasses.replace(cfg, jails=jails)) as pool:
        pool.execute_batch(["print(1)"] * 20 * jails)  # warm-up
        for name, (code, expected) in SNIPPETS.items():
            pids = pool.server_pids()
            # nsjail itself is the parent of each PID 1; it idles, but count it too.
            parents = [int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) for p in pids]
            cpu0 = _own_cpu_s() + sum(_tree_cpu_s(p) for p in pids + parents)
            start = time.monotonic()
            results = pool.execute_batch([code] * runs)
            wall = time.monotonic() - start
            cpu = _own_cpu_s() + sum(_tree_cpu_s(p) for p in pids + parents) - cpu0
            _check(results, expected, f"warm pool, {jails} jail(s)")
            out[name] = _summary(runs, wall, [r.duration_s for r in results], cpu)
        memory = _memory_mb(pool.server_pids()[0])
    return out, memory


def _memory_mb(pid: int) -> dict[str, float]:
    """Resident and proportional (shared pages split) memory of an idle jail's PID 1."""
    values = {}
    for path, key in ((f"/proc/{pid}/status", "VmRSS:"), (f"/proc/{pid}/smaps_rollup", "Pss:")):
        with open(path) as f:
            line = next(l for l in f if l.startswith(key))
        values[key.rstrip(":").lower()] = int(line.split()[1]) / 1024
    return {"jail_rss_mb": values["vmrss"], "jail_pss_mb": values["pss"]}


def bench_sequential(execute: Callable[[str], ExecutionResult], runs: int, mode: str) -> dict:
    """{snippet: summary}, one execution at a time (each is a new process tree)."""
    out = {}
    for name, (code, expected) in SNIPPETS.items():
        execute(code)  # warm the page cache
        cpu0, start = _own_cpu_s(), time.monotonic()
        results = [execute(code) for _ in range(runs)]
        wall = time.monotonic() - start
        _check(results, expected, mode)
        out[name] = _summary(runs, wall, [r.duration_s for r in results], _own_cpu_s() - cpu0)
    return out


def plain_python(cfg: SandboxConfig) -> Callable[[str], ExecutionResult]:
    def execute(code: str) -> ExecutionResult:
        start = time.monotonic()
        proc = subprocess.run([cfg.resolved_runtime_python, "-I", "-c", code], capture_output=True, text=True)
        return ExecutionResult(stdout=proc.stdout, stderr=proc.stderr, exit_code=proc.returncode,
                               duration_s=time.monotonic() - start)

    return execute


def run(scale: float = 1.0) -> dict:
    cfg = SandboxConfig()
    warm_runs, cold_runs = max(10, int(WARM_RUNS * scale)), max(3, int(COLD_RUNS * scale))
    load_before = os.getloadavg()
    modes = {}
    modes["warm1"], memory = bench_warm(cfg, 1, warm_runs)
    modes["warm2"], _ = bench_warm(cfg, 2, warm_runs)
    modes["cold"] = bench_sequential(ColdJailRunner(cfg).execute, cold_runs, "one nsjail per execution")
    modes["plain"] = bench_sequential(plain_python(cfg), cold_runs, "plain python -c")
    report: dict = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": {"warm": warm_runs, "cold": cold_runs},
        "modes": modes,
        **memory,
    }
    for name in SNIPPETS:
        for mode, figures in modes.items():
            report[f"{mode}_{name}_per_s"] = figures[name]["per_s"]
        report[f"ratio_warm_vs_cold_{name}"] = modes["warm1"][name]["per_s"] / modes["cold"][name]["per_s"]
        report[f"ratio_warm_vs_plain_{name}"] = modes["warm1"][name]["per_s"] / modes["plain"][name]["per_s"]
        report[f"ratio_cold_vs_plain_{name}"] = modes["cold"][name]["per_s"] / modes["plain"][name]["per_s"]
        report[f"ratio_warm2_vs_warm1_{name}"] = modes["warm2"][name]["per_s"] / modes["warm1"][name]["per_s"]
    report.update(
        warm_sympy_per_s=modes["warm1"]["sympy"]["per_s"],
        cold_sympy_per_s=modes["cold"]["sympy"]["per_s"],
        warm_trivial_per_s_per_jail=modes["warm1"]["trivial"]["per_s"],
        warm2_trivial_per_s_per_jail=modes["warm2"]["trivial"]["per_s"] / 2,
        warm_p99_ms=max(modes["warm1"][s]["p99_ms"] for s in SNIPPETS),
        warm2_p99_ms=max(modes["warm2"][s]["p99_ms"] for s in SNIPPETS),
        warm_cpu_ms_per_exec=modes["warm1"]["trivial"]["cpu_ms_per_exec"],
    )
    report["targets"] = {
        "warm_vs_cold_sympy_>=30x": report["ratio_warm_vs_cold_sympy"] >= 30,
        "warm_trivial_per_jail_>=250/s": report["warm_trivial_per_s_per_jail"] >= 250,
        "warm_p99_<=20ms": report["warm_p99_ms"] <= 20,
    }
    return report


def print_table(report: dict) -> None:
    labels = {"warm1": "warm pool, 1 jail", "warm2": "warm pool, 2 jails",
              "cold": "one nsjail per exec", "plain": "plain python -c"}
    print(f"sandbox benchmark: {report['cpus']} CPUs, load average {report['load_avg_before']} before, "
          f"{report['load_avg_after']} after; {report['runs']['warm']} warm / {report['runs']['cold']} cold runs per cell")
    print(f"{'mode':22s} {'snippet':8s} {'exec/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU ms/exec':>12s}")
    for mode, figures in report["modes"].items():
        for name, f in figures.items():
            print(f"{labels[mode]:22s} {name:8s} {f['per_s']:9.1f} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {f['cpu_ms_per_exec']:12.2f}")
    for kind, label in (("warm_vs_cold", "warm (1 jail) / one nsjail per exec"), ("warm_vs_plain", "warm (1 jail) / plain python -c"),
                        ("cold_vs_plain", "one nsjail per exec / plain python -c"), ("warm2_vs_warm1", "warm 2 jails / warm 1 jail")):
        print(f"{label:40s} " + "  ".join(f"{n} {report[f'ratio_{kind}_{n}']:.2f}x" for n in SNIPPETS))
    print(f"idle jail PID 1 memory: RSS {report['jail_rss_mb']:.1f} MB, PSS {report['jail_pss_mb']:.1f} MB")
    for target, met in report["targets"].items():
        print(f"target {target}: {'met' if met else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of runs (e.g. 0.1 for a quick look)")
    args = parser.parse_args(argv)
    report = run(args.scale)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
