"""`make bench` (BENCH_SIZE=100k|1m): time each stage as a whole process, median of N runs.

Each measurement is a fresh process (`benchmarks.stages`), so wall time, CPU time and peak RSS are
the process's own, read from `wait4`. Results go to `docs/benchmarks.json` and the Markdown table in
`docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
AS_OF = "2026-11-23"


def measure(args: list[str], env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.stages", *args], cwd=ROOT, env=env
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"stage {args[0]} failed with exit status {os.waitstatus_to_exitcode(status)}"
        )
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(
            next(
                x
                for x in Path("/proc/meminfo").read_text().splitlines()
                if x.startswith("MemTotal")
            ).split()[1]
        )
    except (OSError, StopIteration):
        mem_kb = 0
    system = f"{platform.system()} {platform.release()}"
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, {system}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="100k", choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument(
        "--only",
        choices=["dispatch", "cycle", "ingest"],
        help="run one group of stages: dispatch is printed only; cycle (the full daily cycle "
        "against the floor and pandas) and ingest (against DuckDB's read_csv) are merged into "
        "the size's saved record",
    )
    options = parser.parse_args()
    customers = SIZES[options.size]
    work = options.work / options.size
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if options.only == "dispatch":
        work.mkdir(parents=True, exist_ok=True)
        dispatch_stages(work, env, options.runs)
        return
    source = work / "source"
    if options.only in ("cycle", "ingest"):
        out = ROOT / "docs" / "benchmarks.json"
        existing = json.loads(out.read_text()) if out.exists() else {}
        if options.size not in existing or not source.is_dir():
            raise SystemExit(f"run `make bench` at {options.size} first (no record or source)")
        record = existing[options.size]
        if options.only == "cycle":
            record["stages"].update(cycle_stages(source, work, env, options.runs))
            record["ratios"].update(cycle_ratios(record["stages"]))
        else:
            record["stages"].update(ingest_stages(source, work, env, options.runs))
            record["ratios"].update(ingest_ratios(record["stages"]))
            print_ingest_ratios(record["ratios"])
        record["machine"] = machine()
        out.write_text(json.dumps(existing, indent=2, ensure_ascii=False) + "\n")
        write_markdown(existing, ROOT / "docs" / "benchmarks.md")
        print("written to docs/benchmarks.md")
        return

    results: dict[str, dict] = {}
    shutil.rmtree(source, ignore_errors=True)
    results["generate"] = measure(["generate", str(source), str(customers), AS_OF], env)
    sizes = {p.name: p.stat().st_size for p in sorted(source.glob("*.csv"))}
    rows = {p.stem: sum(1 for _ in p.open("rb")) - 1 for p in sorted(source.glob("*.csv"))}
    print(
        f"generated {options.size}: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()), flush=True
    )

    results.update(ingest_stages(source, work, env, options.runs))
    results.update(dbt_stages(source, work, env, options.runs))
    results.update(dispatch_stages(work, env, options.runs))
    results.update(cycle_stages(source, work, env, options.runs))
    incremental = (
        results["dbt build, one new day (incremental)"]["wall_s"]
        / results["dbt build, full refresh"]["wall_s"]
    )
    record = {
        "size": options.size,
        "customers": customers,
        "rows": rows,
        "file_bytes": sizes,
        "machine": machine(),
        "runs": options.runs,
        "stages": results,
        "ratios": {
            **ingest_ratios(results),
            "dbt incremental / full": round(incremental, 3),
            **cycle_ratios(results),
        },
    }
    out = ROOT / "docs" / "benchmarks.json"
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[options.size] = record
    out.write_text(json.dumps(existing, indent=2, ensure_ascii=False) + "\n")
    write_markdown(existing, ROOT / "docs" / "benchmarks.md")
    print_ingest_ratios(record["ratios"])
    print(f"dbt one-new-day incremental / full = {incremental:.1%} (target < 15%)")
    print("written to docs/benchmarks.md")


def ingest_stages(source: Path, work: Path, env: dict[str, str], runs: int) -> dict[str, dict]:
    """Our ingest (read, type, validate, quarantine, upsert) against DuckDB's own read of the
    same files, each into a new database."""
    db = work / "bench.duckdb"
    results = timed_stages(
        {
            "duckdb_read_csv (reference)": lambda db: ["duckdb_read", str(source), str(db)],
            "ingest + validate": lambda db: ["ingest_core", str(source), str(db), AS_OF],
            INGEST_FLOOR: lambda db: [
                "ingest_typing",
                str(source),
                str(db),
                AS_OF,
            ],
        },
        db,
        env,
        runs,
    )
    db.unlink(missing_ok=True)
    return results


def timed_stages(stages: dict, db: Path, env: dict[str, str], runs: int) -> dict[str, dict]:
    """The median of `runs` runs of each stage, each starting without the database `db`."""
    results = {}
    for stage, args in stages.items():
        timings = []
        for _ in range(runs):
            db.unlink(missing_ok=True)
            timings.append(measure(args(db), env))
        results[stage] = median_of(timings)
        print(f"{stage}: {results[stage]}", flush=True)
    return results


INGEST_FLOOR = "ingest, typing and keys only (its floor)"


def ingest_ratios(stages: dict[str, dict]) -> dict[str, float]:
    """The ingest and its floor against DuckDB's `read_csv`, as saved in a record's ratios."""
    read = stages["duckdb_read_csv (reference)"]["wall_s"]
    return {
        "ingest / duckdb_read_csv": round(stages["ingest + validate"]["wall_s"] / read, 2),
        "ingest floor / duckdb_read_csv": round(stages[INGEST_FLOOR]["wall_s"] / read, 2),
    }


def print_ingest_ratios(ratios: dict[str, float]) -> None:
    print(f"ingest / DuckDB read_csv = {ratios['ingest / duckdb_read_csv']:.2f}x (target ≤ 2x)")
    print(f"  its floor, typing and keys only = {ratios['ingest floor / duckdb_read_csv']:.2f}x")


def dbt_stages(source: Path, work: Path, env: dict[str, str], runs: int) -> dict[str, dict]:
    """The dbt build as of the day after the generated history, on the data of that morning:
    a full refresh, and the incremental run that follows yesterday's build and one new day of
    orders and events. Each run starts from a copy of the same prepared database."""
    next_day = (dt.date.fromisoformat(AS_OF) + dt.timedelta(days=1)).isoformat()
    base = work / "built.duckdb"
    base.unlink(missing_ok=True)
    new_day = work / "new_day"
    shutil.rmtree(new_day, ignore_errors=True)
    # yesterday's state: the history ingested and built as of AS_OF; then the new day arrives
    measure(["ingest_core", str(source), str(base), AS_OF], env)
    measure(["dbt_build", str(base), AS_OF], env)
    measure(["new_day", str(source), str(new_day), AS_OF], env)
    measure(["ingest_core", str(new_day), str(base), next_day, "orders", "events"], env)
    results = {}
    for stage, extra in (
        ("dbt build, full refresh", ["--full-refresh"]),
        ("dbt build, one new day (incremental)", []),
    ):
        timings = []
        for _ in range(runs):
            db = work / "bench.duckdb"
            shutil.copy(base, db)
            timings.append(measure(["dbt_build", str(db), next_day, *extra], env))
            db.unlink()
        results[stage] = median_of(timings)
        print(f"{stage}: {results[stage]}", flush=True)
    # the follow-up models' share of a full build, from the last full build's node timings
    full = work / "full.duckdb"
    shutil.copy(base, full)
    measure(["dbt_build", str(full), next_day, "--full-refresh"], env)
    nodes = json.loads(full.with_suffix(".nodes.json").read_text())
    followup_models = ("int_followup_anchors", "followups_due")
    share = sum(v for k, v in nodes.items() if k.split(":")[1] in followup_models)
    results["_followups_due share of the full build"] = {
        "seconds": round(share, 2),
        "of_total_s": round(sum(nodes.values()), 2),
    }
    runs_plan = []
    for _ in range(runs):
        db = work / "bench.duckdb"
        shutil.copy(full, db)
        runs_plan.append(measure(["plan", str(db), next_day], env))
        db.unlink()
    results["plan (dry run: consent, caps, owners, ledger)"] = median_of(runs_plan)
    print(f"plan: {results['plan (dry run: consent, caps, owners, ledger)']}", flush=True)
    full.unlink()
    base.unlink()
    return results


CYCLE = "full daily cycle (followup run --dry-run)"
FLOOR = "floor: raw DuckDB SQL from the CSVs (reference)"
PANDAS = "pandas RFM from the CSVs (alternative)"


def cycle_stages(source: Path, work: Path, env: dict[str, str], runs: int) -> dict[str, dict]:
    """The whole daily cycle as a user runs it, against the floor (the core outputs in the
    fewest DuckDB statements) and the pandas way; then feedback and the report on its result."""
    stages = {
        FLOOR: lambda db: ["floor", str(source), str(db), AS_OF],
        PANDAS: lambda db: ["pandas_rfm", str(source), str(db.with_suffix(".parquet")), AS_OF],
        CYCLE: lambda db: ["cycle", str(source), str(db), AS_OF],
    }
    results = timed_stages(stages, work / "cycle.duckdb", env, runs)
    # our RFM step: the customer_rfm model's own time in the last cycle's build
    nodes = json.loads((work / "cycle.nodes.json").read_text())
    results["_rfm model"] = {"seconds": round(nodes.get("model:customer_rfm", 0.0), 2)}
    # on the last cycle's database: the day's feedback, then the report
    cycled = work / "cycled.duckdb"
    shutil.copy(work / "cycle.duckdb", cycled)
    for stage, args in {
        "feedback (a third of the day's messages answered; analysis rebuilt)": lambda db: [
            "feedback",
            str(db),
            AS_OF,
        ],
        "report (workbook + HTML)": lambda db: ["report", str(db), str(work / "report")],
    }.items():
        timings = []
        for _ in range(runs):
            db = work / "cycle.duckdb"
            shutil.copy(cycled, db)
            timings.append(measure(args(db), env))
        results[stage] = median_of(timings)
        print(f"{stage}: {results[stage]}", flush=True)
    cycled.unlink()
    return results


def cycle_ratios(stages: dict[str, dict]) -> dict[str, float]:
    ratios = {
        "full daily cycle / floor": round(stages[CYCLE]["wall_s"] / stages[FLOOR]["wall_s"], 2)
    }
    rfm = stages.get("_rfm model", {}).get("seconds")
    if rfm:
        ratios["pandas RFM / our RFM model (dbt node)"] = round(stages[PANDAS]["wall_s"] / rfm, 2)
    return ratios


def dispatch_stages(work: Path, env: dict[str, str], runs: int) -> dict[str, dict]:
    """Messages per second through `http_json`, ledger on, to a local gateway that answers at
    once (its own process), for 10k and 100k pending messages."""
    import socket

    from benchmarks.dispatch_data import seed_pending

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gateway = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.gateway", "--port", str(port)], cwd=ROOT, env=env
    )
    results = {}
    try:
        for _ in range(50):  # wait for the port
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        for n in (10_000, 100_000):
            timings, inner = [], []
            for run in range(runs):
                db = work / "dispatch.duckdb"
                db.unlink(missing_ok=True)
                # a new range of customers each run: the gateway remembers every key it accepted
                seed_pending(db, n, dt.date.fromisoformat(AS_OF), first=(run + 1) * 1_000_000)
                timings.append(
                    measure(["dispatch", str(db), f"http://127.0.0.1:{port}/send", AS_OF, "2"], env)
                )
                inner.append(json.loads(db.with_suffix(".dispatch.json").read_text()))
                if inner[-1]["sent"] != n:
                    raise SystemExit(f"dispatch sent {inner[-1]['sent']} of {n}")
                db.unlink()
            stage = f"dispatch {n // 1000}k messages (http_json, ledger on)"
            results[stage] = median_of(timings)
            seconds = statistics.median(r["seconds"] for r in inner)
            results[stage]["messages_per_s"] = round(n / seconds)
            results[stage]["worker_peak_rss_mib"] = max(r["worker_peak_rss_mib"] for r in inner)
            print(
                f"{stage}: {results[stage]['messages_per_s']:,} messages/s "
                f"(target ≥ 2,000), peak RSS {results[stage]['peak_rss_mib']:.0f} MiB, "
                f"workers {results[stage]['worker_peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    finally:
        gateway.terminate()
        gateway.wait()
    return results


NOTES = "<!-- notes written by hand below this line are kept -->"


def write_markdown(all_results: dict, path: Path) -> None:
    kept = ""
    if path.exists() and NOTES in path.read_text():
        kept = path.read_text().split(NOTES, 1)[1]
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`BENCH_SIZE=1m make bench` for the large size). Every figure is",
        "the median of the runs shown, each stage a whole process: wall time, CPU time (user +",
        "system) and peak resident memory.",
        "",
    ]
    for size, record in sorted(all_results.items(), key=lambda kv: SIZES.get(kv[0], 0)):
        rows = ", ".join(f"{k} {v:,}" for k, v in record["rows"].items())
        lines += [
            f"## {size}: {rows}",
            "",
            f"Machine: {record['machine']}; median of {record['runs']} runs.",
            "",
            "| stage | wall s | CPU s | peak RSS MiB |",
            "|---|---:|---:|---:|",
        ]
        for stage, m in record["stages"].items():
            if stage.startswith("_"):
                continue
            lines.append(
                f"| {stage} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {m['peak_rss_mib']:.0f} |"
            )
        lines.append("")
        for stage, m in record["stages"].items():
            if "messages_per_s" in m:
                lines.append(
                    f"- {stage}: **{m['messages_per_s']:,} messages/s** (engine time), peak RSS "
                    f"{m['peak_rss_mib']:.0f} MiB (dispatcher), {m['worker_peak_rss_mib']:.0f} MiB "
                    "(largest worker)"
                )
        for name, value in record["ratios"].items():
            lines.append(f"- {name}: **{value}×**")
        share = record["stages"].get("_followups_due share of the full build")
        if share:
            lines.append(
                f"- the follow-up models (anchors + followups_due) took {share['seconds']} s of "
                f"the full build's {share['of_total_s']} s of dbt node time"
            )
        lines.append("")
    path.write_text("\n".join(lines) + "\n" + NOTES + kept)


if __name__ == "__main__":
    main()
