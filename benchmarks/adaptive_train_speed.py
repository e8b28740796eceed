#!/usr/bin/env python
"""Networks with adaptive convolutions (DEKR, HGR with ART units): this checkout against an older
revision of the library, measured interleaved in ONE process (read the ratio: the core may be
shared and noisy).

    taskset -c 0 python benchmarks/adaptive_train_speed.py --baseline <commit> --threads 1 --cpu-time

The library at ``--baseline`` is imported beside ``logocap`` as ``logocap_baseline`` (the helper
of ``logocap_train_speed.py``); each side builds the model with the same weights, and both run on
the same random batch. Timed per model and side, alternating baseline / this checkout:
- "train": forward under the chosen precision + backward of a sum of squares of every output
  (the network part of a training step; the losses are not what changed);
- "infer": eval-mode forward without gradients.
Also reported: in float32, the largest difference of the outputs and of the input / parameter
gradients, relative to each tensor's largest value.

Prints a table and writes benchmarks/results/adaptive_train_speed_<date>.json (machine, settings,
rows).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile

from _common import add_clock_arguments, clock_from_args, table, write_results  # puts ROOT first on sys.path
from logocap_train_speed import import_baseline

import torch  # noqa: E402

from logocap.models import create_model  # noqa: E402
from logocap.precision import resolve_precision  # noqa: E402
from logocap.utils import machine_info  # noqa: E402

COLUMNS = [("model", "<18s"), ("mode", "<6s"), ("baseline s", "10.3f"), ("this s", "8.3f"),
           ("speedup", "8.2f"), ("img/s base", "10.2f"), ("img/s this", "10.2f")]


def _tensors(out):
    return [v for v in (out.values() if isinstance(out, dict) else out) if torch.is_tensor(v)]


def _loss(out):
    return sum(v.float().square().mean() for v in _tensors(out))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def fp32_parity(models: dict, x: torch.Tensor) -> dict:
    """Largest relative differences (this vs baseline) of outputs and gradients in float32."""
    res = {}
    for side, m in models.items():
        m = copy.deepcopy(m).float().train()
        xi = x.clone().requires_grad_()
        out = m(xi)
        _loss(out).backward()
        res[side] = ([v.detach() for v in _tensors(out)], xi.grad,
                     {k: q.grad for k, q in m.named_parameters() if q.grad is not None})
    (ob, xb, gb), (ot, xt, gt) = res["baseline"], res["this"]
    return {"max_rel_output_diff": max(_rel(t, b) for t, b in zip(ot, ob)),
            "max_rel_input_grad_diff": _rel(xt, xb),
            "max_rel_param_grad_diff": max(_rel(gt[k], gb[k]) for k in gb)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", required=True, help="git revision to compare with (e.g. a commit)")
    p.add_argument("--models", default="dekr_hrnet_small,hgr_hrnet_small")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--size", type=int, default=256, help="input size in pixels")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    add_clock_arguments(p)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    clock = clock_from_args(p, args)

    tmp = tempfile.TemporaryDirectory()
    base = import_baseline(args.baseline, __import__("pathlib").Path(tmp.name))
    precision = resolve_precision(args.precision, "cpu", args.channels_last)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        ref = create_model(name)
        for m in ref.modules():  # a deformation that varies per pixel (the init reads p 9 times)
            if hasattr(m, "transform_matrix_conv"):
                torch.nn.init.normal_(m.transform_matrix_conv.weight, std=0.05)
                torch.nn.init.normal_(m.translation_conv.weight, std=0.05)
        models = {"baseline": base["models"].create_model(name), "this": create_model(name)}
        for m in models.values():
            m.load_state_dict(ref.state_dict())
        x = torch.randn(args.batch, 3, args.size, args.size)
        parity = fp32_parity(models, x[:2])
        for m in models.values():
            precision.prepare_model(m)
        xs = x.contiguous(memory_format=torch.channels_last) if args.channels_last else x

        def train(m):
            m.train()
            m.zero_grad(set_to_none=True)
            with precision.autocast():
                out = m(xs)
            _loss(out).backward()

        def infer(m):
            m.eval()
            with torch.no_grad(), precision.autocast():
                m(xs)

        for mode, fn in (("train", train), ("infer", infer)):
            times = {k: [] for k in models}
            for m in models.values():  # warm-up (oneDNN primitive creation)
                fn(m)
            for _ in range(args.rounds):
                for k, m in models.items():
                    t0 = clock()
                    fn(m)
                    times[k].append(clock() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"model": name, "mode": mode, "baseline": args.baseline,
                         "s_per_it_baseline": med["baseline"], "s_per_it": med["this"],
                         "speedup_vs_baseline": med["baseline"] / med["this"],
                         "img_per_s_baseline": args.batch / med["baseline"],
                         "img_per_s": args.batch / med["this"], "times": times, **parity})
            print(f"{name} {mode}: {med['baseline']:.3f} s -> {med['this']:.3f} s", flush=True)

    info = machine_info()
    cl = " + channels_last" if args.channels_last else ""
    print(f"adaptive-conv networks vs {args.baseline}: {args.precision}{cl}, batch {args.batch}, "
          f"{args.size} px, "
          f"{info['threads']} thread(s), {'CPU' if args.cpu_time else 'wall'} time, median of "
          f"{args.rounds} interleaved rounds")
    print(table(COLUMNS, [(r["model"], r["mode"], r["s_per_it_baseline"], r["s_per_it"],
                           r["speedup_vs_baseline"], r["img_per_s_baseline"], r["img_per_s"])
                          for r in rows]))
    for r in rows[::2]:
        print(f"{r['model']} fp32 parity: outputs {r['max_rel_output_diff']:.1e}, input grad "
              f"{r['max_rel_input_grad_diff']:.1e}, parameter grads "
              f"{r['max_rel_param_grad_diff']:.1e}")
    write_results("adaptive_train_speed", rows, args,
                  {**info, "clock": "cpu" if args.cpu_time else "wall"}, args.out)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
