"""Merge label-efficiency runs made with longer pretraining and set them beside the default run.

    python scripts/le_pretraining_budget.py BASE_DIR LONG_DIR [LONG_DIR ...] --k 10 \
        --json docs/measurements/X.json --figure docs/figures/X.png

BASE_DIR is a `mnist-ssl label-efficiency` folder made with the default pretraining
(its no-pretraining ViT and raw-pixel rows are the reference); each LONG_DIR holds one
method pretrained longer, at budget k, with the same seeds. Rows are paired by seed (the
labelled images of a (k, seed) are the same in every folder). Prints a markdown table.
"""

import argparse
import json
import statistics
from pathlib import Path


def rows_at(results: dict, k: int) -> dict[tuple[str, int], dict]:
    return {(r["method"], r["seed"]): r for r in results["rows"] if r["k"] == k}


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("long", nargs="+")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--json", required=True)
    ap.add_argument("--figure", required=True)
    args = ap.parse_args()
    base = json.loads((Path(args.base) / "results.json").read_text())
    base_rows = rows_at(base, args.k)
    seeds = sorted({s for (m, s) in base_rows if m == "supervised"})
    scratch = [base_rows[("supervised", s)]["finetune_accuracy"] for s in seeds]
    svm = {b["seed"]: b["accuracy"] for b in base["baselines"] if b["k"] == args.k and b["method"] == "svm"}
    out = {"k": args.k, "seeds": seeds, "test_images": base["test_images"], "pool_images": base["pool_images"],
           "base_command": base["command"], "supervised": scratch, "svm": [svm[s] for s in seeds], "methods": {}}
    print(f"| method | pretraining epochs | k={args.k} fine-tune % | probe % | margin over no pretraining "
          "(per seed) | vs RBF SVM (per seed) |")
    print("|---|---|---|---|---|---|")
    for folder in args.long:
        res = json.loads((Path(folder) / "results.json").read_text())
        long_rows = rows_at(res, args.k)
        for method, pre in res["pretrain"].items():
            entry = {}
            for label, rows, epochs in (("default", base_rows, base["pretrain"][method]["epochs"]),
                                        ("longer", long_rows, pre["epochs"])):
                ft = [rows[(method, s)]["finetune_accuracy"] for s in seeds]
                probe = [rows[(method, s)]["probe_accuracy"] for s in seeds]
                margin = [a - b for a, b in zip(ft, scratch)]
                vs_svm = [a - svm[s] for a, s in zip(ft, seeds)]
                entry[label] = {"pretrain_epochs": epochs, "finetune": ft, "probe": probe, "margin": margin,
                                "vs_svm": vs_svm, "command": (base if label == "default" else res)["command"]}
                print(f"| {method} | {epochs} | {mean_std(ft)} | {mean_std(probe)} | "
                      f"{100 * statistics.mean(margin):+.1f} ({', '.join(f'{100 * m:+.1f}' for m in margin)}) | "
                      f"{100 * statistics.mean(vs_svm):+.1f} ({', '.join(f'{100 * m:+.1f}' for m in vs_svm)}) |")
            out["methods"][method] = entry
    print(f"| supervised (no pretraining) | - | {mean_std(scratch)} | | | |")
    print(f"| RBF SVM, raw pixels | - | {mean_std(out['svm'])} | | | |")
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(out["methods"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.38
    for i, label in enumerate(("default", "longer")):
        means = [100 * statistics.mean(out["methods"][m][label]["margin"]) for m in methods]
        xs = [j + (i - 0.5) * width for j in range(len(methods))]
        ax.bar(xs, means, width, label=f"{label} pretraining", color=("#9ecae1", "#2171b5")[i])
        for j, m in enumerate(methods):
            pts = [100 * v for v in out["methods"][m][label]["margin"]]
            ax.scatter([xs[j]] * len(pts), pts, color="black", s=10, zorder=3)
            ax.annotate(f"{out['methods'][m][label]['pretrain_epochs']} ep", (xs[j], 0), ha="center",
                        va="top", fontsize=7, xytext=(0, -3), textcoords="offset points")
    svm_margin = 100 * (statistics.mean(out["svm"]) - statistics.mean(scratch))
    ax.axhline(svm_margin, color="#d62728", ls="--", lw=1, label="RBF SVM on raw pixels")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("points over the ViT without pretraining")
    ax.set_title(f"{args.k} labels per class, {out['test_images']} test images, "
                 f"{len(seeds)} seeds (dots)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
