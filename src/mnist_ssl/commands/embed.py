"""``mnist-ssl embed``: a data set's frozen features and labels to a .npz (mnist_ssl.embed)."""

from __future__ import annotations

from mnist_ssl.embed import embed


def add_parser(sub) -> None:
    """Register ``mnist-ssl embed`` on the CLI's subparsers."""
    p = sub.add_parser("embed", help="frozen CLS features and labels of a data set, to a .npz",
                       description="Writes x (N, D) features, y (N,) labels, split (N,) and classes (K,).")
    p.add_argument("--checkpoint", required=True, help="any mnist-ssl checkpoint (pretrained or fine-tuned)")
    p.add_argument("--data", required=True,
                   help="'embedded', an IDX folder, an image folder (labelled or not) or a .npz")
    p.add_argument("--dataset", default="mnist", help="the IDX sub-folder name (mnist, fashion-mnist)")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.set_defaults(func=run)


def run(args) -> int:
    summary = embed(args.checkpoint, args.data, args.out, dataset=args.dataset)
    counts = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    print(f"wrote {summary['out']}: {summary['n']} images ({counts}), {summary['dim']} features each")
    return 0
