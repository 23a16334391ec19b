"""A whole study under each executor: wall seconds, CPU seconds and peak memory.

Runs ``synthmri -q run RECIPE --executor E`` once per executor (``serial``, ``local`` with
``--workers`` processes, ``ray`` on a Ray started with ``--workers`` CPUs), each in a fresh
child process, and prints one row per executor. ``serial`` is the reference: the same
stages one after another in one process, as before executors existed.

- **wall s**: the child's wall-clock time, imports included;
- **CPU s**: user + system seconds of the child and everything it started (pool workers,
  Ray's own processes), from the process tree sampled every 0.2 s (a process's last
  < 0.2 s may be missed) or the reaped children's ``getrusage``, whichever is larger;
- **peak PSS sum**: the highest sum over the tree of each process's proportional set size
  at one sample (a page shared by N processes, as forked workers share with their
  parent, counts 1/N in each: the sum is the memory the run occupies), and the peak
  resident size of the largest single process;
- **same**: ``metrics.json`` equal to the serial run's, timings left out.

The stage times of each run come from its ``metrics.json``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_executor.py --out /tmp/bench
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_executor.py --executors serial local \\
        --set generators.0.params.iterations=100 --set data.n=200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLOCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (parent pid, CPU seconds, RSS bytes) of every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            rss_pages = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        table[int(entry)] = (ppid, (utime + stime) / CLOCK, rss_pages * PAGE)
    return table


def _pss(pid: int) -> int:
    """The proportional set size of ``pid`` (pages shared by N processes count 1/N each)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree(table: dict[int, tuple[int, float, int]], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
        todo += children.get(pid, [])
    return out


def measure(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; its wall and CPU seconds and peak RSS (see the module docstring)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        cpu: dict[int, float] = {}
        peak_sum = peak_one = 0
        while proc.poll() is None:
            table = _proc_table()
            pids = _tree(table, proc.pid)
            for pid in pids:
                cpu[pid] = max(cpu.get(pid, 0.0), table[pid][1])
            peak_sum = max(peak_sum, sum(_pss(pid) for pid in pids))
            peak_one = max(peak_one, max((table[pid][2] for pid in pids), default=0))
            time.sleep(0.2)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": max(reaped, sum(cpu.values())),
        "peak_pss_mb": peak_sum / 2**20,
        "peak_rss_one_mb": peak_one / 2**20,
    }


def _results(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in metrics.items() if k not in ("timings", "notes")}
    out["generators"] = [{**g, "train_seconds": None} for g in out.get("generators", [])]
    return out


def _stage_times(metrics: dict[str, Any]) -> str:
    stages = metrics.get("timings", {}).get("stages", {})
    gen = sum(v for k, v in stages.items() if k.startswith("generate/"))
    exp = sum(v for k, v in stages.items() if k.startswith(("classify/", "segment/")))
    return f"generator stages {gen:.0f} s, experiment stages {exp:.0f} s (summed)"


def main() -> None:
    """Run the recipe under each executor and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--executors", nargs="+", default=["serial", "local", "ray"])
    ap.add_argument("--workers", type=int, default=2, help="local processes / Ray CPUs")
    ap.add_argument("--set", action="append", default=[], help="recipe override (repeat)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/synthmri-bench-executors"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows, reference = [], None
    for name in args.executors:
        out = args.out / name
        cmd = [sys.executable, "-c", "from synthmri.cli import main; main()", "-q", "run"]
        cmd += [args.recipe, "--out", str(out), "--executor", name, "--device", "cpu"]
        if name != "serial":
            cmd += ["--workers", str(args.workers)]
        for item in args.set:
            cmd += ["--set", item]
        row = measure(cmd, args.out / f"{name}.log")
        runs = sorted(out.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
        metrics = json.loads(runs[-1].read_text()) if row["rc"] == 0 and runs else {}
        if name == "serial" and metrics:
            reference = _results(metrics)
        row["results"] = _results(metrics) if metrics else None
        row["name"] = name if name == "serial" else f"{name} ({args.workers})"
        row["stages"] = _stage_times(metrics) if metrics else f"failed (rc {row['rc']})"
        rows.append(row)
        print(f"{row['name']}: {row['wall_s']:.1f} s wall; {row['stages']}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for row in rows:  # against serial, whichever order they ran in
        found = reference is not None and row["results"] is not None
        row["same"] = str(row["results"] == reference) if found else "-"
    print(f"\nrecipe {args.recipe} {' '.join('--set ' + s for s in args.set)}".rstrip())
    print("| executor | wall s | CPU s | peak PSS sum MB | peak RSS one process MB | same |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_pss_mb']:.0f} "
            f"| {r['peak_rss_one_mb']:.0f} | {r['same']} |"
        )


if __name__ == "__main__":
    main()
