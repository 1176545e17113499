"""``mnist-ssl probe``: linear probe and kNN on a checkpoint's frozen features, against random weights
and raw pixels (mnist_ssl.experiment.frozen_probe)."""

from __future__ import annotations

import argparse
import json

from mnist_ssl.commands.common import parse_classes, parse_count


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="linear probe and kNN on a checkpoint's frozen features",
                       description="Fits a logistic regression (standardised features, C chosen on the "
                                   "training rows only) and kNN on the frozen features of the training "
                                   "sample, tests on the test sample; the same for the encoder at random "
                                   "initialisation, and with --pixels for the raw pixels.")
    p.add_argument("--checkpoint", required=True, help="any mnist-ssl checkpoint, or a `pretrain --out` folder")
    p.add_argument("--data", default="embedded", metavar="embedded|PATH")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--classes", default=None, metavar="0,1,2|all", help="default 0,1,2 (an image folder: all)")
    p.add_argument("--train-per-class", default=None, metavar="N|all", help="labelled images per class (default 100)")
    p.add_argument("--test-per-class", default=None, metavar="N|all", help="default 100")
    p.add_argument("--seed", type=int, default=0, help="which sample (default 0)")
    p.add_argument("--features", default="cls", metavar="cls,mean,cls+mean,last4",
                   help="what a feature vector is: the CLS token, the mean patch token, both, or both from "
                        "each of the last four blocks (comma list)")
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="choose the probe's C on one stratified hold-out of this fraction of the training "
                        "rows instead of 5-fold cross-validation (large labelled sets)")
    p.add_argument("--knn-k", type=int, default=None, help="neighbours of the plain kNN vote (default: the run's)")
    p.add_argument("--no-random-init", action="store_true", help="skip the random-initialisation encoder")
    p.add_argument("--pixels", action="store_true", help="also probe the raw pixels (and 1-NN on them)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the result as JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.experiment.frozen_probe import probe_checkpoint
    from mnist_ssl.fileio import atomic_write_text

    classes = parse_classes(args.classes)
    result = probe_checkpoint(
        args.checkpoint, data=args.data, dataset=args.dataset, classes=classes,
        train_per_class=parse_count(args.train_per_class, "--train-per-class"),
        test_per_class=parse_count(args.test_per_class, "--test-per-class"), seed=args.seed,
        pools=tuple(p.strip() for p in args.features.split(",") if p.strip()),
        random_init=not args.no_random_init, pixels=args.pixels, holdout=args.holdout,
        knn_k=args.knn_k, threads=args.threads or 1)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['method']} checkpoint, {result['n_train']} training and {result['n_test']} test images, "
          f"classes {result['classes']}")
    print(f"{'features':<10} {'encoder':<12} {'dim':>4} {'probe %':>8} {'C':>7} {'kNN %':>7} {'wkNN %':>7}")
    rows = [(pool, name, r) for pool, by in result["features"].items() for name, r in by.items()]
    if "pixels" in result:
        rows.append(("pixels", "-", result["pixels"]))
    for pool, name, r in rows:
        dim = r.get("dim", "")
        print(f"{pool:<10} {name:<12} {dim:>4} {100 * r['linear_probe_cv']['accuracy']:>8.2f} "
              f"{r['linear_probe_cv']['C']:>7g} {100 * r['knn']['accuracy']:>7.2f} "
              f"{100 * r['knn_weighted']['accuracy']:>7.2f}")
    print(f"probe: C chosen by {rows[0][2]['linear_probe_cv']['C_chosen_by']}; kNN: plain vote of "
          f"{rows[0][2]['knn']['k']} (pixels: 1-NN); wkNN: weighted vote of {rows[0][2]['knn_weighted']['k']}, "
          f"T={rows[0][2]['knn_weighted']['temperature']}")
    stopped = [f"{pool}/{name} C={r['linear_probe_cv']['C']:g}" for pool, name, r in rows
               if r["linear_probe_cv"]["C"] in r["linear_probe_cv"]["unconverged_Cs"]]
    if stopped:
        print(f"note: lbfgs stopped at its iteration limit for the chosen C of {', '.join(stopped)}")
    return 0
