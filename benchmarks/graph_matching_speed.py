"""Time per graph-matching instance: the batched l12 solver against one scipy FAQ call.

Solves ``--batch`` noisy Erdos-Renyi instances (n vertices) at once with ``match_graphs(method="l12")``
(its default settings: 8 random starts, at most 450 mirror steps, early stopping) on ``--device``, and the same instances one by one
with a single FAQ call each, then prints both times per instance, their ratio and both accuracies.

    .venv/bin/python benchmarks/graph_matching_speed.py --n 50 --batch 32
    .venv/bin/python benchmarks/graph_matching_speed.py --n 50 --batch 1024 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from aslib.examples.graph_matching import erdos_renyi, match_graphs, recovery
from aslib.utils.runtime import resolve_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--p", type=float, default=0.2)
    parser.add_argument("--faq-instances", type=int, default=32, help="instances timed for FAQ (the first ones)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    inst = erdos_renyi(args.n, args.p, args.noise, args.batch, seed=args.seed)

    if device.type == "cuda":  # warm-up: CUDA context and kernels
        match_graphs(inst.A[:2], inst.B[:2], "l12", device=device)
        torch.cuda.synchronize()
    start = time.perf_counter()
    l12 = match_graphs(inst.A, inst.B, "l12", device=device, seed=args.seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    l12_per_instance = (time.perf_counter() - start) / args.batch

    k = min(args.faq_instances, args.batch)
    start = time.perf_counter()
    faq = match_graphs(inst.A[:k], inst.B[:k], "faq", restarts=1, seed=args.seed)
    faq_per_instance = (time.perf_counter() - start) / k

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu, solver loop on 1 thread"
    print(f"device: {device} ({name})")
    print(f"n = {args.n}, noise = {args.noise}, batch = {args.batch} (FAQ timed on {k})")
    print(f"l12 batched : {l12_per_instance * 1e3:9.2f} ms per instance, "
          f"recovery {recovery(l12.col_ind.cpu(), inst.perm).mean():.3f}, "
          f"mean disagreement {l12.fun.double().mean():.1f}")
    print(f"FAQ, 1 call : {faq_per_instance * 1e3:9.2f} ms per instance, "
          f"recovery {recovery(faq.col_ind, inst.perm[:k]).mean():.3f}, "
          f"mean disagreement {faq.fun.double().mean():.1f}")
    print(f"ratio l12 / FAQ time per instance: {l12_per_instance / faq_per_instance:.2f}")


if __name__ == "__main__":
    main()
