"""The terminal's closing table of a reproduce job, from its metrics.json content."""

from __future__ import annotations

from mnist_ssl.objectives.registry import METHODS


def summary_table(metrics: dict) -> str:
    """The terminal's closing table: method x (fine-tune, linear probe, kNN), mean ± std over seeds."""
    from mnist_ssl.evaluation.metrics import summary

    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        s = summary([100 * v for v in values])
        return f"{s['mean']:.2f} ± {s['std']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f}"

    rows = ["| method | fine-tune % | with TTA % | linear probe % | kNN % | document % | seeds |",
            "|---|---|---|---|---|---|---|"]
    for m, rs in _by_method(metrics["runs"]).items():
        doc = METHODS[m].document_accuracy if m in METHODS else None
        rows.append(f"| {m} | {fmt([r['accuracy'] for r in rs])} | "
                    f"{fmt([r['tta']['accuracy'] for r in rs if r.get('tta')])} | "
                    f"{fmt([r['linear_probe']['accuracy'] for r in rs if 'linear_probe' in r])} | "
                    f"{fmt([r['knn']['accuracy'] for r in rs if 'knn' in r])} | "
                    f"{'-' if doc is None else f'{doc:.2f}'} | {len(rs)} |")
    for m, rs in _by_method(metrics["baselines"]).items():
        rows.append(f"| {m} (raw pixels) | {fmt([r['accuracy'] for r in rs])} | - | - | - | - | {len(rs)} |")
    n_test = metrics["runs"][0]["n_test"] if metrics["runs"] else 0
    return "\n".join(rows) + f"\n({n_test} test images per seed; wall time {metrics['wall_time_s']} s)"


def _by_method(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r)
    return out
