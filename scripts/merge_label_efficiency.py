"""One label-efficiency table from the results.json of several runs of the same protocol.

    python scripts/merge_label_efficiency.py OUT.json RESULTS.json RESULTS.json ... [--table OUT.md] [--figures DIR]

Two processes (one per core) or two sessions that ran other methods with the same data, test
sample, label budgets, seeds and fine-tuning budget give rows that are paired (the same
labelled images per k and seed). This checks that the protocol is the same, refuses a row or
baseline that two inputs give with different numbers, and writes the union with its summary,
margins and printed table, as `mnist-ssl label-efficiency` writes its own. Each input's command
and wall time are kept under "merged_from".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The settings that make two results' rows comparable (paired by k and seed). The label budgets
# and seed counts may differ: a row depends only on its method, k and seed.
PROTOCOL = ("schema", "data", "classes", "pool_images", "test_images", "first_seed", "finetune_steps",
            "finetune_min_epochs")


class MergeError(Exception):
    pass


def _union(key_of, parts: list[tuple[str, list[dict]]], what: str) -> list[dict]:
    """The rows of every part, once each. The same row in two parts must agree on every number
    both hold (its seconds aside: a row made twice takes another time); a measurement one of
    them adds (a row that --resume completed, e.g. with its frozen kNN) is kept."""
    seen: dict = {}
    for name, rows in parts:
        for row in rows:
            key = key_of(row)
            if key not in seen:
                seen[key] = (name, dict(row))
                continue
            first_name, kept = seen[key]
            shared = (set(kept) & set(row)) - {"time_s"}
            if any(kept[f] != row[f] for f in shared):
                raise MergeError(f"{name} and {first_name} give different {what} for {key}")
            kept.update({f: v for f, v in row.items() if f not in kept})
    return [row for _, row in seen.values()]


def merge(results: list[tuple[str, dict]]) -> dict:
    from mnist_ssl.report.label_efficiency import margins, summarise, summarise_baselines

    first_name, first = results[0]
    for name, r in results:
        if "rows" not in r or r.get("schema") != "mnist-ssl/label-efficiency/v1":
            raise MergeError(f"{name} is not a label-efficiency results.json")
        for key in PROTOCOL:
            if r.get(key) != first.get(key):
                raise MergeError(f"{name} has {key}={json.dumps(r.get(key))}, {first_name} "
                                 f"{json.dumps(first.get(key))}: their rows are not paired")
    pretrain: dict = {}
    for name, r in results:
        for method, p in r.get("pretrain", {}).items():
            if method in pretrain and pretrain[method] != p:
                raise MergeError(f"{name} pretrained {method} otherwise than another input")
            pretrain[method] = p
    out = {key: first.get(key) for key in PROTOCOL}
    budgets: dict = {}  # k -> the most seeds any input ran
    for _, r in results:
        for k, n in zip(r["labels_per_class"], r["seeds"]):
            budgets[k] = max(n, budgets.get(k, 0))
    ks = sorted(budgets, key=lambda k: (not isinstance(k, int), k if isinstance(k, int) else 0))  # "all" last
    out["labels_per_class"], out["seeds"] = ks, [budgets[k] for k in ks]
    out.update(source=first.get("source"), threads=first.get("threads"), pretrain=pretrain)
    out["rows"] = _union(lambda r: (r["method"], r["k"], r["seed"]), [(n, r["rows"]) for n, r in results], "rows")
    out["baselines"] = _union(lambda r: (r["method"], r["k"], r["seed"]),
                              [(n, r.get("baselines", [])) for n, r in results], "baselines")
    out["merged_from"] = [{"file": n, "command": r.get("command"), "wall_time_s": r.get("wall_time_s")}
                          for n, r in results]
    out["summary"] = summarise(out["rows"])
    out["baseline_summary"] = summarise_baselines(out["baselines"])
    out["margins_at_10"] = margins(out["summary"], 10)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the merged results JSON to write")
    ap.add_argument("inputs", nargs="+", help="label-efficiency results.json files")
    ap.add_argument("--table", help="also write the printed table (markdown) here")
    ap.add_argument("--figures", metavar="DIR", help="also draw DIR/accuracy_vs_labels.png and "
                    "DIR/probe_vs_labels.png, as label-efficiency draws them in its folder")
    a = ap.parse_args(argv)
    from mnist_ssl.engine.checkpoint import atomic_write_text
    from mnist_ssl.experiment.label_efficiency import seeds_note
    from mnist_ssl.report.label_efficiency import format_table, write_plots

    try:
        results = []
        for name in a.inputs:
            try:
                results.append((name, json.loads(Path(name).read_text())))
            except (OSError, ValueError) as e:
                raise MergeError(f"{name}: cannot read it as JSON ({e.__class__.__name__})") from None
        merged = merge(results)
    except MergeError as e:
        print(f"merge_label_efficiency: {e}", file=sys.stderr)
        return 2
    atomic_write_text(Path(a.out), json.dumps(merged, indent=2) + "\n")
    table = format_table(merged) + "\n" + seeds_note(merged)
    if a.table:
        atomic_write_text(Path(a.table), table + "\n")
    if a.figures:
        from mnist_ssl.experiment.rundir import LabelEfficiencyDir

        Path(a.figures).mkdir(parents=True, exist_ok=True)
        write_plots(merged, merged["pool_images"] // len(merged["classes"]),
                    {part: Path(a.figures) / name for part, name in LabelEfficiencyDir.PLOTS.items()})
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
