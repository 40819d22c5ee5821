"""The JSON rows of bench/README.md's format, shared by the Python benchmarks (the SDK's and the
reference's) so they cannot describe the same scenario differently."""

from __future__ import annotations

import statistics


def pct(samples, p):
    """Percentile `p` (0..1) of `samples`, nearest rank."""
    s = sorted(samples)
    return s[min(len(s) - 1, round((len(s) - 1) * p))]


def cycle_row(name, implementation, client, samples):
    """An uncontended acquire+release cycle; `samples` in seconds."""
    return {
        "name": name,
        "implementation": implementation,
        "client": client,
        "scenario": "uncontended cycle",
        "mean_us": statistics.mean(samples) * 1e6,
        "p50_us": pct(samples, .5) * 1e6,
        "p99_us": pct(samples, .99) * 1e6,
        "samples": len(samples),
    }


def contended_row(implementation, client, *, workers, permits, hold_s, seconds, wall_seconds, utilisation, waits):
    """The contended run of `seconds` that took `wall_seconds` (its last cycles end later);
    `utilisation` as a fraction of the wall time, `waits` in seconds."""
    return {
        "name": f"contended, {workers} processes, {permits} permits, {hold_s * 1e3:.0f} ms hold, {seconds:g} s",
        "implementation": implementation,
        "client": client,
        "scenario": "contended",
        "workers": workers,
        "worker_kind": "processes",
        "permits": permits,
        "hold_ms": hold_s * 1e3,
        "seconds": seconds,
        "wall_seconds": wall_seconds,
        "utilisation_pct": utilisation * 100,
        "grants": len(waits),
        "wait_p50_ms": pct(waits, .5) * 1e3,
        "wait_p99_ms": pct(waits, .99) * 1e3,
        "wait_mean_ms": statistics.mean(waits) * 1e3,
        "wait_samples_ms": [round(w * 1e3, 3) for w in waits],
    }
