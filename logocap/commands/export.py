"""``logocap export``: a checkpoint's network -> ONNX, for ``--backend onnxruntime``.

``logocap export --weights run/last.pth`` writes ``run/last.onnx`` (LOGO-CAP also
``run/last.kam.onnx``, the message-passing graph) with dynamic batch and image size and the
checkpoint's metadata inside; each graph is checked against torch on ONNX Runtime before it is
written. Then ``logocap predict IMG --weights run/last.pth --backend onnxruntime`` (or
``--onnx run/last.onnx``) runs it. See logocap/export.py.
"""
from __future__ import annotations

import argparse

HELP = ("export a checkpoint's network to ONNX (LOGO-CAP: network + KAM graph; dynamic batch and "
        "image size; metadata inside), for `predict --backend onnxruntime`")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..export import EXPORTERS, OPSET

    p.add_argument("--weights", required=True, help="logocap checkpoint, or a plain state_dict "
                   "(then --model is needed)")
    p.add_argument("--model", default=None, help="model name (required for plain state_dicts)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--out", default=None, help="output file (*.onnx); none = the weights path with "
                   "the suffix .onnx. LOGO-CAP also writes <out stem>.kam.onnx next to it")
    p.add_argument("--exporter", default="auto", choices=EXPORTERS,
                   help="torch exporter: torchscript (torch.onnx.export dynamo=False, seconds), dynamo "
                        "(torch.export based, minutes on a CPU), auto = torchscript, else dynamo "
                        "when it fails or its graph disagrees with torch")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (>= 17)")


def run(args) -> int:
    from ..export import default_onnx_path, export_checkpoint
    from .common import check_out

    out = args.out or default_onnx_path(args.weights)
    check_out(out, kind="file")
    report = export_checkpoint(args.weights, out, args.model, args.exporter, args.opset)
    for graph, kind in report["exporter"].items():
        print(f"{graph}: {kind} exporter, opset {report['opset']}, ONNX Runtime vs torch: "
              f"max relative difference {report['max_rel_diff'][graph]:.1e}")
    for f in report["files"]:
        print(f"wrote {f}")
    print(f"export took {report['seconds']:.1f} s; run it with `logocap predict IMAGES --onnx "
          f"{report['files'][-1]} --backend onnxruntime`")
    return 0
