"""``mnist-ssl export``: a checkpoint's encoder for timm or HuggingFace transformers (mnist_ssl.export)."""

from __future__ import annotations

from mnist_ssl.export import FORMATS, export


def add_parser(sub) -> None:
    """Register ``mnist-ssl export`` on the CLI's subparsers."""
    p = sub.add_parser("export", help="write a checkpoint's encoder for timm or HuggingFace transformers",
                       description="timm: model.safetensors + timm.json (timm.create_model arguments); "
                                   "hf: config.json + model.safetensors for transformers.ViTModel.from_pretrained.")
    p.add_argument("--checkpoint", required=True, help="a pretrained or finetuned .safetensors")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, help="the folder to write")
    p.set_defaults(func=run)


def run(args) -> int:
    for path in export(args.checkpoint, args.fmt, args.out):
        print(f"wrote {path}")
    return 0
