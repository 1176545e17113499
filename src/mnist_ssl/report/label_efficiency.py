"""label-efficiency's tables and plots, from its rows (results.json): mean ± std over seeds
per method and budget, the raw-pixel baselines, the margin over the no-pretraining ViT."""

from __future__ import annotations

def summarise(rows: list[dict]) -> dict:
    """method -> k -> {"finetune": {mean, std, n}, "probe": {...}} (std over seeds, ddof=1; 0 for one seed)."""
    from mnist_ssl.evaluation.metrics import summary

    out: dict = {}
    for r in rows:
        out.setdefault(r["method"], {}).setdefault(str(r["k"]), {"finetune": [], "probe": []})
        cell = out[r["method"]][str(r["k"])]
        cell["finetune"].append(r["finetune_accuracy"])
        cell["probe"].append(r["probe_accuracy"])
        if "semi_accuracy" in r:  # rows with the semi-supervised stage
            cell.setdefault("semi", []).append(r["semi_accuracy"])
        if "knn_accuracy" in r:  # rows made since the frozen kNN is measured
            cell.setdefault("knn", []).append(r["knn_accuracy"])
    for cells in out.values():
        for k, cell in cells.items():
            for part in [p for p in ("finetune", "probe", "knn", "semi") if p in cell]:
                s = summary(cell[part])
                cell[part] = {"mean": s["mean"], "std": s["std"] if s["n"] > 1 else 0.0, "n": s["n"]}
    return out


BASELINE_NAMES = {"svm": "RBF SVM, raw pixels", "knn": "1-NN, raw pixels", "logreg": "logistic regression, raw pixels"}


def summarise_baselines(rows: list[dict]) -> dict:
    """baseline -> k -> {mean, std, n} of its test accuracy over seeds."""
    from mnist_ssl.evaluation.metrics import summary

    acc: dict = {}
    for r in rows:
        acc.setdefault(r["method"], {}).setdefault(str(r["k"]), []).append(r["accuracy"])
    out: dict = {}
    for name, cells in acc.items():
        out[name] = {}
        for k, values in cells.items():
            s = summary(values)
            out[name][k] = {"mean": s["mean"], "std": s["std"] if s["n"] > 1 else 0.0, "n": s["n"]}
    return out


def margins(summ: dict, k: int) -> dict:
    """Fine-tuning accuracy of each method minus the no-pretraining ViT's, at k labels per class."""
    base = summ.get("supervised", {}).get(str(k))
    if base is None:
        return {}
    return {m: round(cells[str(k)]["finetune"]["mean"] - base["finetune"]["mean"], 4)
            for m, cells in summ.items() if m != "supervised" and str(k) in cells}


def class_names(result: dict) -> list[str] | None:
    """The names of the classes a label-efficiency result classifies, as the reproduce report
    names them (``data.class_names`` at each of ``classes``: an image folder's subfolders);
    None for MNIST's digits."""
    names, classes = (result.get("data") or {}).get("class_names"), result.get("classes")
    if not (isinstance(names, list) and isinstance(classes, list)
            and all(isinstance(c, int) and 0 <= c < len(names) for c in classes)):
        return None
    return [str(names[c]) for c in classes]


def format_table(result: dict) -> str:
    summ = result.get("summary") or summarise(result["rows"])
    ks = [str(k) for k in result["labels_per_class"]]
    head = "| method | " + " | ".join(f"k={k}" for k in ks) + " |"
    names = class_names(result)
    lines = [f"Test accuracy % (fine-tuned; linear probe in brackets), mean ± std over seeds; "
             f"{result['pool_images']} pool images, {result['test_images']} test images"
             f"{'; classes ' + ', '.join(names) if names else ''}.", "",
             head, "|---" * (len(ks) + 1) + "|"]
    for m, cells in summ.items():
        row = []
        for k in ks:
            c = cells.get(k)
            if c is None:
                row.append("-")
                continue
            f, p = c["finetune"], c["probe"]
            row.append(f"{100 * f['mean']:.1f} ± {100 * f['std']:.1f} ({100 * p['mean']:.1f}) n={f['n']}")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
        # The frozen features' weighted kNN and the semi-supervised stage: rows of their own.
        for part, label in (("knn", f"{m}, frozen kNN"), ("semi", f"{m} + semi")):
            if any(part in c for c in cells.values()):
                values = [("-" if part not in cells.get(k, {}) else
                           f"{100 * cells[k][part]['mean']:.1f} ± {100 * cells[k][part]['std']:.1f} "
                           f"n={cells[k][part]['n']}") for k in ks]
                lines.append(f"| {label} | " + " | ".join(values) + " |")
    base = result.get("baseline_summary") or summarise_baselines(result.get("baselines", []))
    for name, cells in base.items():
        row = [("-" if cells.get(k) is None else
                f"{100 * cells[k]['mean']:.1f} ± {100 * cells[k]['std']:.1f} n={cells[k]['n']}") for k in ks]
        lines.append(f"| {BASELINE_NAMES.get(name, name)} | " + " | ".join(row) + " |")
    marg = result.get("margins_at_10") or margins(summ, 10)
    if marg:
        lines += ["", "Margin over the no-pretraining ViT at k=10 (fine-tuned, points): "
                  + ", ".join(f"{m} {100 * v:+.1f}" for m, v in marg.items())]
    return "\n".join(lines)


def write_plots(result: dict, all_per_class: int, paths: dict) -> None:
    """accuracy_vs_labels (fine-tuning, with the baselines) and probe_vs_labels: ``paths[part]``."""
    from mnist_ssl.report.plots import plot_accuracy_vs_labels

    summ = result.get("summary") or summarise(result["rows"])
    for part in ("finetune", "probe"):
        table = {m: {(all_per_class if k == "all" else int(k)): (c[part]["mean"], c[part]["std"])
                     for k, c in cells.items()} for m, cells in summ.items()}
        if part == "finetune":  # the raw-pixel baselines beside the fine-tuned ViTs
            base = result.get("baseline_summary") or summarise_baselines(result.get("baselines", []))
            for baseline, cells in base.items():
                table[BASELINE_NAMES.get(baseline, baseline)] = {
                    (all_per_class if k == "all" else int(k)): (c["mean"], c["std"]) for k, c in cells.items()}
        plot_accuracy_vs_labels(table, str(paths[part]))
