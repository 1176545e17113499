"""``mnist-ssl evaluate``: test a fine-tuned checkpoint on a data set."""

from __future__ import annotations

import argparse
import json

from mnist_ssl.commands.common import parse_classes, parse_count
from mnist_ssl.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test a fine-tuned checkpoint on a data set")
    p.add_argument("--checkpoint", required=True, help="a finetuned.safetensors")
    p.add_argument("--data", default="embedded", metavar="embedded|DIR")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--classes", default=None, help="default: the checkpoint's classes")
    p.add_argument("--test-per-class", default=None, metavar="N|all", help="default 100")
    p.add_argument("--all-test", action="store_true", help="every test image of the checkpoint's classes")
    p.add_argument("--seed", type=int, default=None, help="test sample (default 0)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="also report the accuracy with test-time augmentation: probabilities averaged over "
                        "each image and N copies under the checkpoint's fine-tuning augmentation (default 0: off)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.evaluation.metrics import format_confusion
    from mnist_ssl.experiment.run import evaluate_checkpoint

    classes = parse_classes(args.classes)
    if args.tta < 0:
        raise ConfigError(f"--tta {args.tta}: must be >= 0 (0 = no test-time augmentation)")
    result = evaluate_checkpoint(
        args.checkpoint, data=args.data, dataset=args.dataset,
        classes=None if classes == "keep" else classes, classes_given=classes != "keep",
        test_per_class=parse_count(args.test_per_class, "--test-per-class"), all_test=args.all_test,
        seed=args.seed if args.seed is not None else 0, threads=args.threads or 1, tta_views=args.tta)
    if args.json:
        keys = ("accuracy", "n", "classes", "confusion", "ci95", "recall") + (("tta",) if args.tta else ())
        print(json.dumps({k: result[k] for k in keys}))
        return 0
    print(f"Test Accuracy: {100 * result['accuracy']:.2f}% on {result['n']} images "
          f"(95% interval {100 * result['ci95'][0]:.2f}-{100 * result['ci95'][1]:.2f}%)")
    if args.tta:
        print(f"Test Accuracy with test-time augmentation ({args.tta} copies): "
              f"{100 * result['tta']['accuracy']:.2f}%")
    print("Confusion Matrix:")
    print(format_confusion(result["confusion"]))
    return 0
