"""torch.compile (inductor, CPU) on the network, against the eager fast path: is it worth it for a
100-image run once its compile time is counted? (issue 13 item 7)

    python benchmarks/compile_trial.py --model logocap_hrnet_w32 --size 512 --iters 3

The network is the one the Predictor calls with ``test.impl: fast`` (conv+BN folded,
channels_last), image + mirror as one batch of 2 (the flip test). Eager and compiled calls are
interleaved; the compile time is the first compiled call minus one eager call. Prints a table and
writes JSON to benchmarks/results/ (``--out``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _common import write_json  # first: puts the repository on sys.path

import torch  # noqa: E402

from logocap.engine.precision import resolve_precision  # noqa: E402
from logocap.models import create_model  # noqa: E402
from logocap.models.fuse import fuse_conv_bn  # noqa: E402
from logocap.utils import machine_info  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="logocap_hrnet_w32")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--images", type=int, default=100, help="run length the compile time is spread over")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--freezing", action="store_true", help="inductor freezing (constant-folded, "
                   "prepacked weights; inference only)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.freezing:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = fuse_conv_bn(create_model(args.model)).to(memory_format=torch.channels_last)
    prec = resolve_precision(args.precision, "cpu", channels_last=True)
    x = torch.randn(2, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)

    def eager():
        with torch.inference_mode(), prec.autocast():
            return net(x)

    row = {"model": args.model, "size": args.size, "precision": args.precision, "batch": 2,
           "freezing": args.freezing,
           "threads": torch.get_num_threads(), "load_average": os.getloadavg()}
    with torch.inference_mode(), prec.autocast():
        ref = net(x)
    t0 = time.perf_counter()
    ref = eager()
    t_first_eager = time.perf_counter() - t0
    try:
        compiled = torch.compile(net, backend="inductor")

        def comp():
            with torch.inference_mode(), prec.autocast():
                return compiled(x)

        t0 = time.perf_counter()
        out = comp()
        row["first_compiled_call_s"] = time.perf_counter() - t0
        row["compile_s"] = row["first_compiled_call_s"] - t_first_eager
    except Exception as e:  # inductor needs a working C++ toolchain; say what failed
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        print(f"torch.compile failed: {row['error']}")
        return _write(args, row)
    row["max_abs_diff"] = max(float((out[k].float() - ref[k].float()).abs().max()) for k in ref)
    te, tc = [], []
    for _ in range(args.iters):  # interleaved
        t0 = time.perf_counter()
        eager()
        te.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        comp()
        tc.append(time.perf_counter() - t0)
    row["eager_ms"] = 1000 * statistics.median(te)
    row["compiled_ms"] = 1000 * statistics.median(tc)
    row["speedup_steady"] = statistics.median(a / b for a, b in zip(te, tc))
    n = args.images
    row[f"eager_{n}_images_s"] = n * row["eager_ms"] / 1000
    row[f"compiled_{n}_images_s"] = row["compile_s"] + n * row["compiled_ms"] / 1000
    row["wins_over_run"] = row[f"compiled_{n}_images_s"] < row[f"eager_{n}_images_s"]
    print(f"{args.model} {args.size}px {args.precision} batch 2: eager {row['eager_ms']:.0f} ms, "
          f"compiled {row['compiled_ms']:.0f} ms (x{row['speedup_steady']:.2f} steady), compile "
          f"{row['compile_s']:.0f} s; {n} images: eager {row[f'eager_{n}_images_s']:.0f} s vs "
          f"compiled {row[f'compiled_{n}_images_s']:.0f} s; max |diff| {row['max_abs_diff']:.2e}")
    return _write(args, row)


def _write(args, row) -> int:
    if args.out:
        write_json(args.out, {"benchmark": "torch.compile trial", "row": row, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
