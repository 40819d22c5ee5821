"""Merges the benchmarks' JSON files into one Markdown report and a chart of the contended waits.

    target/py/venv/bin/python bench/report.py [--json-dir target/report/json] [--out target/report]

Reads every ``*.json`` in the JSON folder — written with ``BENCH_JSON=<path>`` by
tests/benches/semaphore.rs (Rust), bindings/python/bench.py (Python SDK),
bench/reference/original.py (the original algorithm), and any other SDK's benchmark that writes
the same format (a Kotlin SDK's appears as its own row) — and writes ``benchmarks.md`` and
``wait-times.png`` to the output folder. ``cargo xtask report`` runs the benchmarks, then this.

The format: ``{"benchmark": source, "redis_server": version, "rows": [row, ...]}``; every row has
``name``, ``implementation``, ``client`` and ``scenario``. Rows of scenario "uncontended cycle"
have ``mean_us``, ``p50_us``, ``p99_us``; rows of scenario "contended" have ``utilisation_pct``,
``grants``, ``wait_p50_ms``, ``wait_p99_ms`` and ``wait_samples_ms``; other scenarios are listed
with whatever figures they carry.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Row order of the tables; implementations not listed here (another SDK's) come after the SDKs.
ORDER = [
    "raw EVALSHA",
    "bare Redis list",
    "Rust host (component)",
    "native protocol",
    "Python SDK",
    "Kotlin SDK",
    "reference original algorithm",
]

#: Words that say what each implementation is, under the tables.
WHAT = {
    "raw EVALSHA": "EVALSHA of `return 1`, twice per cycle: the floor any one-round-trip-per-call design sits on",
    "bare Redis list": "tokens in a Redis list taken with BLPOP and given back with RPUSH (redis-rs): the "
    "contended run's floor, the least a hand-off through Redis costs; not a semaphore (no leases, fencing or script)",
    "Rust host (component)": "`BlockingSemaphore`: the protocol compiled to wasm, run by the Rust host (wasmtime)",
    "native protocol": "the same protocol code (`core/`) compiled natively, over plain synchronous redis-rs connections (no wasm)",
    "Python SDK": "`pottery_semaphore.Semaphore` (the Rust host behind a Python extension)",
    "Kotlin SDK": "the Kotlin SDK (the Rust host behind UniFFI bindings)",
    "reference original algorithm": "`bench/reference/original.py`: the original pottery-semaphore algorithm "
    "(single-master Redlock + counter + BLPOP queue) on redis-py, written from its README",
}


def order_key(impl: str):
    if impl in ORDER:
        return (ORDER.index(impl), impl)
    return (ORDER.index("Kotlin SDK") + 0.5, impl)


def load(json_dir: Path):
    files = sorted(json_dir.glob("*.json"))
    docs = []
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            sys.exit(f"report.py: cannot read {f}: {e}")
        doc["_file"] = f
        for row in doc.get("rows", []):
            row["_doc"] = doc
        docs.append(doc)
    return docs


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def us(x) -> str:
    if x is None:
        return "—"
    return f"{x:,.1f} µs" if x < 1000 else f"{x / 1000:,.2f} ms"


def ms(x) -> str:
    if x is None:
        return "—"
    return f"{x:,.2f} ms" if x < 10 else f"{x:,.1f} ms"


def language(row) -> str:
    return (row.get("client") or "").split(" ")[0]


def baseline_for(row, cycles):
    """The raw EVALSHA ×2 row measured by the same benchmark, else by the same language's."""
    raws = [r for r in cycles if r["implementation"] == "raw EVALSHA"]
    for r in raws:
        if r["_doc"] is row["_doc"]:
            return r
    for r in raws:
        if language(r) == language(row):
            return r
    return None


def cycle_table(cycles) -> list[str]:
    out = [
        "| Implementation | Measured with | mean | p50 | p99 | mean ÷ raw EVALSHA ×2 | samples |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sorted(cycles, key=lambda r: (order_key(r["implementation"]), language(r) != "Rust")):
        base = baseline_for(row, cycles)
        if row["implementation"] == "raw EVALSHA":
            ratio = "1.00× (baseline)"
        elif base:
            ratio = f"{row['mean_us'] / base['mean_us']:.2f}× ({language(base)})"
        else:
            ratio = "—"
        out.append(
            f"| {row['implementation']} | {row.get('client', '—')} | {us(row.get('mean_us'))} | "
            f"{us(row.get('p50_us'))} | {us(row.get('p99_us'))} | {ratio} | {row.get('samples', '—')} |"
        )
    return out


def contended_table(runs) -> list[str]:
    out = [
        "| Implementation | Workers | utilisation | grants | ideal grants | idle per grant | wait p50 | wait p99 | wait mean |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sorted(runs, key=lambda r: order_key(r["implementation"])):
        ideal = idle = "—"
        if row.get("permits") and row.get("hold_ms") and row.get("seconds"):
            ideal = f"{row['permits'] * row['seconds'] * 1000 / row['hold_ms']:,.0f}"
        run_s = row.get("wall_seconds") or row.get("seconds")
        if row.get("permits") and run_s and row.get("grants"):
            # Utilisation is over the measured run where the bench gives it (the Rust one).
            unused_s = (1 - row["utilisation_pct"] / 100) * row["permits"] * run_s
            idle = us(unused_s / row["grants"] * 1e6)
        workers = f"{row.get('workers', '?')} {row.get('worker_kind', '')}".strip()
        out.append(
            f"| {row['implementation']} | {workers} | {row['utilisation_pct']:.1f} % | {row['grants']:,} | {ideal} | "
            f"{idle} | {ms(row.get('wait_p50_ms'))} | {ms(row.get('wait_p99_ms'))} | {ms(row.get('wait_mean_ms'))} |"
        )
    return out


UNITS = {"_us": " µs", "_ms": " ms", "_mib": " MiB", "_pct": " %", "_us_per_script": " µs/script"}


def figures(row) -> str:
    """The figures of a row of another scenario, in words: `p99_us` 118.7 → "p99 118.7 µs"."""
    skip = {"name", "implementation", "client", "scenario", "_doc", "note"}
    parts = []
    for k, v in row.items():
        if k in skip or isinstance(v, dict):
            continue
        label, unit = k, ""
        for suffix, u in UNITS.items():
            if k.endswith(suffix):
                label, unit = k[: -len(suffix)], u
        label = label.replace("_", " ")
        if isinstance(v, list):
            parts.append(f"{label}: " + ", ".join(f"{x:,.0f}" if isinstance(x, float) else str(x) for x in v) + unit)
        elif isinstance(v, float) and unit == " µs" and v >= 1000:
            parts.append(f"{label} {v / 1000:,.2f} ms")
        elif isinstance(v, float):
            parts.append(f"{label} {v:,.1f}{unit}" if abs(v) >= 10 else f"{label} {v:,.2f}{unit}")
        else:
            parts.append(f"{label} {v}{unit}")
    return "; ".join(parts)


def other_table(rows) -> list[str]:
    out = ["| Measurement | Implementation | Measured with | Result |", "| --- | --- | --- | --- |"]
    for row in sorted(rows, key=lambda r: order_key(r["implementation"].split(" (")[0])):
        out.append(f"| {row['name']} | {row['implementation']} | {row.get('client', '—')} | {figures(row)} |")
    return out


def chart(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: order_key(r["implementation"]))
    floor = 0.01  # ms: zero waits are drawn here on the log axis
    data = [[max(floor, w) for w in r["wait_samples_ms"]] for r in runs]
    labels = [f"{r['implementation']}\n({r.get('workers', '?')} {r.get('worker_kind', '')})" for r in runs]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, (cdf, box) = plt.subplots(2, 1, figsize=(10, 9), height_ratios=[3, 2])
    for i, (r, d) in enumerate(zip(runs, data)):
        if not d:
            continue
        s = sorted(d)
        n = len(s)
        cdf.step(s, [(k + 1) / n for k in range(n)], where="post", color=colours[i % len(colours)], linewidth=2,
                 label=f"{r['implementation']}\np50 {r['wait_p50_ms']:.1f} ms, p99 {r['wait_p99_ms']:.1f} ms, "
                       f"{r['grants']} grants")
    hold = next((r.get("hold_ms") for r in runs if r.get("hold_ms")), None)
    workers = next((r.get("workers") for r in runs if r.get("workers")), None)
    permits = next((r.get("permits") for r in runs if r.get("permits")), None)
    if hold and workers and permits:
        fair = (workers / permits - 1) * hold
        cdf.axvline(fair, color="grey", linestyle="--", linewidth=1)
        cdf.text(fair * 0.95, 0.5, f"FIFO ideal ≈ {fair:.0f} ms", color="grey", fontsize=9, rotation=90,
                 ha="right", va="center")
    cdf.set_xscale("log")
    cdf.set_xlabel("wait from acquire() call to permit (ms, log scale)")
    cdf.set_ylabel("fraction of acquisitions")
    cdf.set_ylim(0, 1.02)
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="best", fontsize=9, framealpha=0.9)
    title = "Contended waits: cumulative distribution"
    if hold and workers and permits:
        title += f" ({workers} workers, {permits} permits, {hold:g} ms hold)"
    cdf.set_title(title)

    bp = box.boxplot(data, orientation="horizontal", whis=(1, 99), showfliers=True, patch_artist=True,
                     flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black", "linewidth": 2})
    for i, patch in enumerate(bp["boxes"]):
        patch.set_facecolor(colours[i % len(colours)])
        patch.set_alpha(0.5)
    box.set_yticks(range(1, len(labels) + 1), labels, fontsize=9)
    box.invert_yaxis()
    box.set_xscale("log")
    box.set_xlabel("wait (ms, log scale); box: p25–p75, line: p50, whiskers: p1–p99")
    box.grid(True, which="both", axis="x", alpha=0.3)
    box.set_xlim(cdf.get_xlim())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json-dir", type=Path, default=ROOT / "target/report/json")
    ap.add_argument("--out", type=Path, default=ROOT / "target/report")
    args = ap.parse_args()

    docs = load(args.json_dir)
    if not docs:
        sys.exit(f"report.py: no *.json in {args.json_dir}")
    rows = [r for d in docs for r in d.get("rows", [])]
    cycles = [r for r in rows if r.get("scenario") == "uncontended cycle"]
    runs = [r for r in rows if r.get("scenario") == "contended"]
    others = [r for r in rows if r.get("scenario") not in ("uncontended cycle", "contended")]
    m = machine()
    servers = sorted({d.get("redis_server", "?") for d in docs})

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "wait-times.png"
    if runs:
        chart(runs, png)

    md = [
        "# pottery-semaphore benchmarks",
        "",
        f"Generated {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory']}, "
        f"{m['os']}, Python {m['python']}, redis-server {', '.join(servers)} on loopback (each benchmark "
        "starts its own). A shared machine: timings are noisy, run to run differences of 20–50 % "
        "are common; compare rows of one report rather than reports.",
        "",
        "## Uncontended acquire + release cycle",
        "",
        "One handle, a free permit: `acquire()` then `release()`, timed together after warm-up.",
        "",
        *cycle_table(cycles),
        "",
        "Ratios are to the raw EVALSHA ×2 baseline measured by the same client language.",
        "",
        "## Contended run",
        "",
    ]
    if runs:
        r0 = runs[0]
        md += [
            f"{r0.get('workers', '?')} workers (threads or processes: see the Workers column) loop "
            f"acquire → hold {r0.get('hold_ms', '?'):g} ms → release on {r0.get('permits', '?')} permits for "
            f"{r0.get('seconds', '?'):g} s. Utilisation is time held ÷ (permits × run time); "
            "\"ideal grants\" is permits × run time ÷ hold; \"idle per grant\" is the time a permit sat "
            "unused per grant, (1 − utilisation) × permits × run time ÷ grants: the release's round trip, "
            "Redis's script, the waiter's wake-up. With FIFO hand-offs every acquisition waits "
            f"about (workers ÷ permits − 1) × hold = "
            f"{(r0.get('workers', 8) / r0.get('permits', 2) - 1) * r0.get('hold_ms', 10):.0f} ms, "
            "so a tight distribution there is the goal; the spread around it is fairness.",
            "",
            *contended_table(runs),
            "",
            f"![contended wait-time distributions]({png.name})",
            "",
        ]
    else:
        md += ["No contended run was found.", ""]
    if others:
        md += ["## Other measurements", "", *other_table(others), ""]
    md += ["## What the rows are", ""]
    impls = sorted({r["implementation"] for r in cycles + runs}, key=order_key)
    md += [f"- **{i}**: {WHAT.get(i, 'another SDK')}" for i in impls]
    md += [f"- Note ({r['implementation']}, {r.get('client', '?')}): {r['note']}" for r in rows
           if r.get("note") and r.get("scenario") == "uncontended cycle"]
    if "reference original algorithm" in impls:
        md += [
            "- The reference's notification list grows by one token per release and a woken waiter pushes "
            "its token back, so after the first release its BLPOP returns at once: waiters spin on the "
            "lock rather than sleep, competing with the holders' releases for it.",
        ]
    md += [
        "",
        "Sources: " + ", ".join(
            f"`{d.get('benchmark', d['_file'].name)}` → `{d['_file'].name}` "
            f"({datetime.datetime.fromtimestamp(d['_file'].stat().st_mtime).strftime('%Y-%m-%d %H:%M')})"
            for d in docs
        ) + ".",
        "",
    ]
    report = args.out / "benchmarks.md"
    report.write_text("\n".join(md))
    print(f"report.py: wrote {report}" + (f" and {png}" if runs else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
