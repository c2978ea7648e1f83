"""Accuracy against wall time: the l1-2 solver against scipy's FAQ and 2-opt given the same time.

For every instance, ``aslib.quadratic_assignment(method="l12")`` runs once with its defaults and is
timed (minimising nonnegative matrices, the defaults include the ``"faq"`` polish), then one FAQ call, then l12
with ``polish=False``, with ``polish="2opt"`` (scipy's 2-opt from l12's answer) and with ``polish=True``
(``"faq"``: scipy's FAQ from the relaxed matrices of l12's best starts, the best answer kept, then 2-opt;
minimising, after a shorter solve with more starts), the polish inside the timed call, so that they are
interleaved on the same instance; then FAQ (``P0="randomized"`` after a first call from the barycenter) and
2-opt (random starts) are called again and again until their summed time reaches the l12 time (FAQ also the
``polish=True`` time), at least once each, keeping their best answer. l12 is also run in float32, to count the
instances where it gives the float64 answer (the same permutation or the same objective: a tie). One instance at
a time, one CPU thread; the time ratio to one FAQ call is the median over instances of each instance's own ratio.

Families (``n`` set per family below, ``--instances`` each, seeded):

* ``regular``: random 3-regular graphs, relabelled (maximise ``tr(A^T P B P^T)``; success: an isomorphism);
* ``erdos_renyi``, ``noisy_erdos_renyi``: G(n, 0.2) with 2% and 5% of the vertex pairs flipped before
  relabelling (success: recovery, the fraction of vertices matched to their planted partner);
* ``grid``, ``cycle``: relabelled grid and cycle graphs (success: an isomorphism);
* ``planted_qap``: a random nonnegative asymmetric weight matrix ``A`` and ``B = P^T A P`` plus 1% noise
  (maximise);
* ``flow_distance``: facility-layout style, sparse random integer flows against Manhattan distances on a
  grid (minimise).

Beside them, when installed (``qap_peers.py``; ``benchmarks/README.md``): graspologic's ``graph_match``, FAQ
and GOAT (``transport=True``) for l12's time and GOAT once, and pygmtools' RRWM, IPFP and SM on the Lawler
affinity where it fits in memory.

Every row reports the mean gap to the best value any method found on that instance
(``|fun - best| / |best|``), the success rate where a planted answer exists, and the mean time.

    .venv/bin/python benchmarks/qap_benchmark.py --instances 10 --out benchmarks/results/qap_benchmark_cpu.csv

With ``--device cuda`` the penalty method runs on the GPU (scipy's methods stay on the CPU, so "the same
time" is l12's GPU time): ``benchmarks/gpu_checks.sh`` runs it that way.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aslib import quadratic_assignment
from aslib.examples.graph_matching import make_instances
from aslib.utils.runtime import describe_device
from qap_peers import available as available_peers, peer_answers

#: ``family: (n, noise)``; the noise (the fraction of vertex pairs flipped) is read by the Erdos-Renyi families only.
FAMILIES = {"regular": (30, 0.0), "erdos_renyi": (50, 0.02), "noisy_erdos_renyi": (50, 0.05), "grid": (30, 0.0),
            "cycle": (30, 0.0), "planted_qap": (30, 0.0), "flow_distance": (30, 0.0)}


def planted_qap(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``A`` nonnegative asymmetric, ``B[perm[i], perm[j]] = A[i, j]`` plus 1% relative noise."""
    A = rng.exponential(size=(n, n))
    perm = rng.permutation(n)
    B = np.empty_like(A)
    B[np.ix_(perm, perm)] = A
    return A, B + 0.01 * rng.exponential(size=(n, n)), perm


def flow_distance(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric integer flows (40% of pairs nonzero, 1..9) and Manhattan distances on a near-square grid."""
    side = int(np.ceil(np.sqrt(n)))
    xy = np.array([(i // side, i % side) for i in range(n)])
    D = np.abs(xy[:, None] - xy[None]).sum(-1).astype(float)
    F = np.triu(rng.integers(1, 10, (n, n)) * (rng.random((n, n)) < 0.4), 1)
    return (F + F.T).astype(float), D


def instances(family: str, n: int, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]]:
    """``(A, B, planted permutation or None, maximize)`` for each instance."""
    rng = np.random.default_rng(seed)
    if family in ("regular", "erdos_renyi", "noisy_erdos_renyi", "grid", "cycle"):
        graphs = "erdos_renyi" if family == "noisy_erdos_renyi" else family
        inst = make_instances(graphs, n, FAMILIES[family][1], count, seed)
        return [(inst.A[b].numpy(), inst.B[b].numpy(), inst.perm[b].numpy(), True) for b in range(count)]
    if family == "planted_qap":
        return [(*planted_qap(n, rng), True) for _ in range(count)]
    return [(*flow_distance(n, rng), None, False) for _ in range(count)]


def timed(call: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def best_within(method: str, A: np.ndarray, B: np.ndarray, maximize: bool, budget: float,
                rng: np.random.Generator) -> tuple[object, float, int]:
    """Calls of scipy's ``method`` from random starts until their summed time reaches ``budget``."""
    best, spent, calls = None, 0.0, 0
    while calls == 0 or spent < budget:
        options = {"maximize": maximize, "rng": rng}
        if method == "faq" and calls > 0:
            options["P0"] = "randomized"
        result, seconds = timed(lambda: quadratic_assignment(A, B, method, options))
        spent, calls = spent + seconds, calls + 1
        if best is None or (result.fun > best.fun if maximize else result.fun < best.fun):
            best = result
    return best, spent, calls


def run(families: list[str], count: int, seed: int, device: str = "cpu", peers: bool = True) -> pd.DataFrame:
    """One row per instance and method; the penalty method runs on ``device`` (scipy's on the CPU); ``peers``:
    also the installed graph-matching libraries of :mod:`qap_peers`."""
    rows = []
    warm = np.random.default_rng(seed).random((8, 8))  # first calls pay one-off set-up costs: not timed
    for method in ("l12", "faq", "2opt"):
        quadratic_assignment(warm, warm, method, {"device": device} if method == "l12" else None)
    if peers:  # graspologic compiles with numba on its first calls
        peer_answers(warm, warm, True, 0.0, np.random.default_rng(seed))
    for family in families:
        n = FAMILIES[family][0]
        for index, (A, B, planted, maximize) in enumerate(instances(family, n, count, seed)):
            rng = np.random.default_rng(seed + index)
            options = {"maximize": maximize, "rng": index, "device": device}
            # interleaved on one instance, so that the shared machine's load falls on all of them alike
            l12, l12_seconds = timed(lambda: quadratic_assignment(A, B, "l12", options))
            faq1, faq1_seconds = timed(lambda: quadratic_assignment(A, B, "faq", {"maximize": maximize}))
            plain, plain_seconds = timed(lambda: quadratic_assignment(A, B, "l12", dict(options, polish=False)))
            two_opt, two_opt_seconds = timed(lambda: quadratic_assignment(A, B, "l12", dict(options, polish="2opt")))
            polished, polished_seconds = timed(lambda: quadratic_assignment(A, B, "l12", dict(options, polish=True)))
            single = quadratic_assignment(A, B, "l12", dict(options, dtype=torch.float32))
            answers = {"l12": (l12, l12_seconds, 1), "l12 polish=False": (plain, plain_seconds, 1),
                       "l12 + 2opt polish": (two_opt, two_opt_seconds, 1),
                       "l12 + faq polish": (polished, polished_seconds, 1),
                       "faq (1 call)": (faq1, faq1_seconds, 1),
                       "faq (same time)": best_within("faq", A, B, maximize, l12_seconds, rng),
                       "faq (polish time)": best_within("faq", A, B, maximize, polished_seconds, rng),
                       "2opt (same time)": best_within("2opt", A, B, maximize, l12_seconds, rng)}
            if peers:  # graspologic and pygmtools where installed (qap_peers.py), scored the same way
                answers.update(peer_answers(A, B, maximize, l12_seconds, rng))
            values = [r.fun for r, _, _ in answers.values()]
            best = max(values) if maximize else min(values)
            for method, (result, seconds, calls) in answers.items():
                row = {"family": family, "n": n, "instance": index, "method": method, "calls": calls,
                       "gap": abs(result.fun - best) / max(abs(best), 1e-12), "ms": 1e3 * seconds,
                       "per_faq_call": seconds / faq1_seconds}
                if method == "l12":  # the same answer in float32, up to ties (an equal objective)
                    row["float32_same"] = bool(np.array_equal(single.col_ind, l12.col_ind)
                                               or np.isclose(single.fun, l12.fun, rtol=1e-9))
                if planted is not None:
                    row["recovery"] = float((result.col_ind == planted).mean())
                    P = np.eye(n)[result.col_ind]
                    row["exact_match"] = bool(np.array_equal(A, P @ B @ P.T))
                rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("recovery", "exact_match"):  # absent when no family has a planted answer
        if column not in table:
            table[column] = np.nan
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where l12 runs: cpu, cuda, cuda:N or auto")
    parser.add_argument("--out", type=Path, default=None, help="write the summary table here (csv)")
    parser.add_argument("--no-peers", action="store_true", help="skip graspologic and pygmtools even if installed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    table = run(args.families, args.instances, args.seed, args.device, peers=not args.no_peers)
    load = f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    summary = (table.groupby(["family", "n", "method"], sort=False)
               .agg(instances=("gap", "size"), mean_gap=("gap", "mean"), recovery=("recovery", "mean"),
                    exact_match=("exact_match", "mean"), float32_same=("float32_same", "mean"),
                    calls=("calls", "mean"), ms=("ms", "mean"), median_ms=("ms", "median"),
                    median_per_faq_call=("per_faq_call", "median"))
               .reset_index().round(4))
    device = describe_device(args.device)
    ratio = summary.pivot_table(index="family", columns="method", values="median_per_faq_call", sort=False)
    data = "; ".join(f"{family} n={FAMILIES[family][0]}" + (f" flips {FAMILIES[family][1]:.0%}" if "erdos" in family
                                                                else "") for family in args.families)
    lines = [f"device: {device} (scipy on the CPU); {load} on {os.cpu_count()} cores; one instance "
             f"at a time; seed {args.seed} (instance i: rng seed i); per family {args.instances} instances ({data}); "
             f"peers: {', '.join(available_peers()) if not args.no_peers and available_peers() else 'none'}",
             summary.to_string(index=False),
             "l12 time / one FAQ call (median over instances, each timed next to its FAQ call): "
             + ", ".join(f"{family} {row['l12']:.0f}x (with faq polish {row['l12 + faq polish']:.0f}x)"
                         for family, row in ratio.iterrows())]
    if "graspologic goat (1 call)" in ratio:
        lines.append("l12 time / one GOAT call (the ratio of the medians above): " + ", ".join(
            f"{family} {row['l12'] / row['graspologic goat (1 call)']:.1f}x" for family, row in ratio.iterrows()))
    print("\n".join(lines))
    if args.out is not None:  # the table as csv, and what was printed beside it as .txt
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary.assign(device=device, load=load, seed=args.seed).to_csv(args.out, index=False)
        args.out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
