"""`mtst-export`: write a trained MTST model in a format made for serving.

    mtst-export onnx --model outputs/mtst-default --output outputs/mtst-onnx             # model.onnx
    mtst-export onnx --model user/mtst-model --output mtst-onnx --quantize               # + model_int8.onnx
    mtst-predict --model outputs/mtst-onnx --backend onnx "Apple opens an office in Paris."
    mtst-predict --model outputs/mtst-onnx --backend onnx --dtype int8 --input news.txt

`onnx` exports the whole model (encoder, pooling, projection, every head) as one graph with the named outputs
`sentence_embedding`, `pooled_embedding` (before normalization) and `logits_<task>` for every task, dynamic in batch
size and sequence length; checks it against PyTorch with onnxruntime (every output, to `--atol`); with
`--quantize` also writes `model_int8.onnx` (ONNX Runtime dynamic int8 quantization). The folder also holds
`config.json` and the tokenizer. Needs the `onnx` extra: `pip install -e ".[onnx]"`. Errors are one paragraph on
stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "mtst-export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a trained MTST model for serving.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = sub.add_parser("onnx", help="one ONNX graph with every head as a named output, for onnxruntime")
    onnx.add_argument("--model", "-m", required=True, help="local MTST folder or Hub id")
    onnx.add_argument("--output", "-o", required=True, help="folder to write model.onnx, config and tokenizer to")
    onnx.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub ids only)")
    onnx.add_argument("--quantize", action="store_true", help="also write model_int8.onnx (dynamic int8)")
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or newer (default: 18)")
    onnx.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference from PyTorch (1e-4)")
    onnx.add_argument("--no_check", action="store_true", help="skip the comparison with PyTorch")
    return parser


def export(args: argparse.Namespace) -> dict:
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from mtst.cli.predict import PredictError, check_model
    from mtst.inference import InferenceError, check_opset, export_onnx
    from mtst.remote.configuration_mtst import MTSTConfig, MTSTConfigError
    from mtst.remote.modeling_mtst import MTSTModel

    hf_logging.set_verbosity_error()
    try:
        check_opset(args.opset)  # before the model is loaded
    except InferenceError as e:
        raise PredictError(str(e)) from None
    check_model(args.model, args.revision)
    AutoConfig.register("mtst", MTSTConfig, exist_ok=True)
    kwargs = {} if os.path.isdir(args.model) else {"revision": args.revision}
    try:
        model = MTSTModel.from_pretrained(args.model, **kwargs).eval()
    except (OSError, ValueError, MTSTConfigError) as e:
        raise PredictError(f"Could not load the MTST model from '{args.model}': {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise PredictError(f"'{args.model}' has no usable tokenizer ({e}); the export folder needs one.") from None
    if os.path.isfile(args.output):
        raise PredictError(f"--output '{args.output}' is a file; give a folder.")
    try:
        return export_onnx(
            model,
            args.output,
            tokenizer,
            quantize=args.quantize,
            opset=args.opset,
            check=not args.no_check,
            atol=args.atol,
        )
    except InferenceError as e:
        raise PredictError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mtst-export`; returns the exit code (0, or 2 for errors about the model or the options)."""
    from mtst.cli.predict import PredictError

    args = build_parser().parse_args(argv)
    try:
        report = export(args)
    except PredictError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    diffs = report.get("max_abs_diff")
    checked = f"; largest difference from PyTorch {max(diffs.values()):.2e}" if diffs else ""
    print(
        f"{PROG}: wrote {', '.join(report['written'])} to {report['folder']} (outputs: "
        f"{', '.join(report['outputs'])}){checked}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
