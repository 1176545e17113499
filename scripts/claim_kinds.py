"""The kinds of measurement file a claims comment can cite, and how each checks its table
(scripts/check_claims.py lists them with their rows, columns and options)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any, Callable

from claim_cells import (
    NUMBER, BadInput, Report, Table, check_per_seed, check_stat, clean, fmt, holds, load_json, pct, read_tables,
    row_key, unchecked_columns,
)

# The source document's accuracies (one run each; README's first table).
DOCUMENT_FIGURES = {"mae": 99.00, "infonce": 98.67, "mae-infonce": 98.00, "videomae": 98.00}


# --- kind: reproduce ----------------------------------------------------------------------


def _reproduce_file(root: Path, rel: str, where: str) -> tuple[list[int], dict[str, dict[int, dict]]]:
    """(seeds, method -> seed -> entry) of a reproduce metrics.json (runs and baselines)."""
    metrics = load_json(root, rel, where)
    try:
        entries = list(metrics["runs"]) + list(metrics.get("baselines", []))
        by: dict[str, dict[int, dict]] = {}
        for entry in entries:
            by.setdefault(entry["method"], {})[entry["seed"]] = entry
        seeds = list(metrics.get("seeds") or sorted({e["seed"] for e in entries}))
    except (KeyError, TypeError):
        raise BadInput(f"{where}: {rel} is not a reproduce metrics.json") from None
    return seeds, by


def _row_files(table: Table) -> list[tuple[str, str]]:
    """(text, file) of the file[TEXT]=... options, in the order written; '_' in TEXT is a space."""
    out = []
    for key, value in table.options.items():
        match = re.fullmatch(r"file\[(.+)\]", key)
        if match:
            out.append((match.group(1).replace("_", " ").lower(), value))
    return out


def check_reproduce(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    cited = [table.options["file"], *dict(_row_files(table)).values()]
    files = {rel: _reproduce_file(root, rel, where) for rel in cited}
    if "ensemble" in table.options:
        seeds, by = files[table.options["file"]]
        by["ensemble"] = _ensemble_entries(table, root, by)
    unchecked = unchecked_columns(table)

    for cells in table.rows:
        label = cells[0]
        rel = next((f for text, f in _row_files(table) if text in clean(label).lower()), table.options["file"])
        seeds, by = files[rel]
        key = row_key(label, set(by)) or table.options.get("method")
        if key is None or key not in by:
            hint = " (no ensemble= file in the claims comment)" if clean(label).lower().startswith("ensemble") else ""
            report.unknown(table, f"row '{label}' names no method of {rel}{hint}")
            continue
        entries = [by[key][s] for s in seeds if s in by[key]]
        if len(entries) != len(seeds):
            report.unknown(table, f"row '{label}': {key} has {len(entries)} of the file's {len(seeds)} seeds")
            continue

        def values(get: Callable[[dict], Any]) -> list[float]:
            out = [get(e) for e in entries]
            return [] if any(v is None for v in out) else [pct(v) for v in out]

        acc = values(lambda e: e["accuracy"])
        tta = values(lambda e: (e.get("tta") or {}).get("accuracy"))
        for column, cell in zip(table.header[1:], cells[1:]):
            head = clean(column).lower()
            text = clean(cell)
            if any(head.startswith(u) for u in unchecked):
                continue
            if head.startswith("fine-tune %"):
                listed = re.search(r"\(seeds ([\d, ]+)\)", head)
                if listed and [int(s) for s in listed.group(1).split(",")] != seeds:
                    report.unknown(table, f"column '{column}' names seeds {listed.group(1)}, the file has {seeds}")
                check_stat(report, table, label, column, cell, acc)
            elif head == "per seed":
                check_per_seed(report, table, label, column, cell, acc)
            elif head == "min":
                if text != "-":
                    report.cells += 1
                    if not holds(text, min(acc)):
                        report.wrong(table, label, column, fmt(min(acc), text), cell)
            elif head.startswith("with tta"):
                check_stat(report, table, label, column, cell, tta)
            elif head.startswith("linear probe"):
                probe = values(lambda e: (e.get("linear_probe") or {}).get("accuracy"))
                check_stat(report, table, label, column, cell, probe)
            elif head.startswith("knn"):
                k = re.search(r"k=(\d+)", head)
                ks = {(e.get("knn") or {}).get("k") for e in entries}
                if k and text != "-" and ks != {int(k.group(1))}:
                    report.unknown(table, f"row '{label}': column '{column}' says k={k.group(1)}, the file has k={ks}")
                check_stat(report, table, label, column, cell, values(lambda e: (e.get("knn") or {}).get("accuracy")))
            elif head.startswith(("source document", "document")):
                if text != "-":
                    report.cells += 1
                    figure = DOCUMENT_FIGURES.get(key)
                    if figure is None or not holds(text, figure):
                        report.wrong(table, label, column, "-" if figure is None else f"{figure:.2f}", cell)
            elif "met?" in head or "at or above" in head:
                if text != "-":
                    _check_verdict(report, table, label, column, cell, key, acc, tta)
            else:
                report.unknown(table, f"column '{column}' is not one kind=reproduce knows")
                return


def _ensemble_entries(table: Table, root: Path, by: dict[str, dict[int, dict]]) -> dict[int, dict]:
    where = f"{table.doc}:{table.line}"
    data = load_json(root, table.options["ensemble"], where)
    accuracy = {(m, s): e["accuracy"] for m, seeds in by.items() for s, e in seeds.items()}
    out = {}
    try:
        for seed in data["seeds"]:
            for method, acc in seed["accuracy"].items():
                if abs(accuracy.get((method, seed["seed"]), -1.0) - acc) > 1e-9:
                    raise BadInput(f"{where}: {table.options['ensemble']} is not of the run in {table.options['file']} "
                                   f"({method} seed {seed['seed']}: {acc} there)")
            out[seed["seed"]] = {"method": "ensemble", "seed": seed["seed"], "accuracy": seed["ensemble"]}
    except (KeyError, TypeError):
        raise BadInput(f"{where}: {table.options['ensemble']} is not an ensemble_predictions.py JSON") from None
    return out


def _check_verdict(report: Report, table: Table, label: str, column: str, cell: str,
                   key: str, acc: list[float], tta: list[float]) -> None:
    """'yes (+0.33) / yes', 'missed by 0.47 / by 0.13', 'met / met': each part against the figure."""
    figure = DOCUMENT_FIGURES.get(key)
    if figure is None:
        report.wrong(table, label, column, "- (no document figure)", cell)
        return
    parts = [p.strip() for p in clean(cell).split("/")]
    last = None
    for part, values, name in zip(parts, (acc, tta), ("plain", "TTA")):
        word = re.match(r"(yes|met|no|missed|by)\b", part)
        if not word or not values:
            report.wrong(table, label, column, f"a verdict for the {name} mean", cell)
            return
        report.cells += 1
        verdict = last if word.group(1) == "by" else word.group(1) in ("yes", "met")
        last = verdict
        mean = statistics.fmean(values)
        diff = mean - figure
        met = round(mean, 2) >= figure - 1e-9
        expected = f"{'met' if met else 'missed'} ({diff:+.2f})"
        if verdict != met:
            report.wrong(table, label, column, f"{name}: {expected}", cell)
            continue
        by = re.search(rf"by ({NUMBER})", part)
        signed = re.search(r"\(([+-]\d+(?:\.\d+)?)\)", part)
        if by and not holds(by.group(1), -diff):
            report.wrong(table, label, column, f"{name}: missed by {-diff:.2f}", cell)
        if signed and not holds(signed.group(1), diff):
            report.wrong(table, label, column, f"{name}: {diff:+.2f}", cell)


# --- kind: label-efficiency ---------------------------------------------------------------


def _k_of(head: str) -> str | None:
    head = clean(head).lower()
    match = re.match(r"k\s*=\s*(\d+)", head)
    if match:
        return match.group(1)
    return "all" if head.startswith("all") else None


def _le_values(data: dict) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(method, k) -> {'finetune': [...], 'probe': [...]} in %, in seed order; baselines too."""
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in sorted(data.get("rows", []), key=lambda r: r["seed"]):
        slot = out.setdefault((row["method"], str(row["k"])), {"finetune": [], "probe": []})
        slot["finetune"].append(pct(row["finetune_accuracy"]))
        for part, field in (("probe", "probe_accuracy"), ("knn", "knn_accuracy"), ("semi", "semi_accuracy")):
            if row.get(field) is not None:
                slot.setdefault(part, []).append(pct(row[field]))
    for row in sorted(data.get("baselines", []), key=lambda r: r["seed"]):
        slot = out.setdefault((row["method"], str(row["k"])), {"finetune": [], "probe": []})
        slot["finetune"].append(pct(row["accuracy"]))
    return out


def check_label_efficiency(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    data = load_json(root, table.options["file"], where)
    if "rows" not in data:
        raise BadInput(f"{where}: {table.options['file']} is not a label-efficiency results JSON")
    values = _le_values(data)
    methods = {m for m, _ in values}
    for cells in table.rows:
        label = cells[0]
        key = row_key(label, methods)
        if key is None:
            report.unknown(table, f"row '{label}' names no method of {table.options['file']}")
            continue
        for column, cell in zip(table.header[1:], cells[1:]):
            k = _k_of(column)
            if k is None:
                report.unknown(table, f"column '{column}' is not one kind=label-efficiency knows")
                return
            slot = values.get((key, k), {"finetune": [], "probe": []})
            seeds = re.search(r"\((\d+) seeds?\)", column)
            if seeds and int(seeds.group(1)) != len(slot["finetune"]) and clean(cell) != "-":
                report.wrong(table, label, column, f"{len(slot['finetune'])} seeds", f"{seeds.group(1)} in the header")
            _check_with_probe(report, table, label, column, cell, slot)


def _check_with_probe(report: Report, table: Table, label: str, column: str, cell: str,
                      slot: dict[str, list[float]]) -> None:
    text = clean(cell)
    check_stat(report, table, label, column, re.sub(r"\(.*\)", "", text), slot["finetune"])
    probe = re.search(rf"\((?:probe\s+)?({NUMBER})\)", text)
    if probe:
        report.cells += 1
        if not slot["probe"] or not holds(probe.group(1), statistics.fmean(slot["probe"])):
            expected = fmt(statistics.fmean(slot["probe"]), probe.group(1)) if slot["probe"] else "no probe"
            report.wrong(table, label, column, f"probe {expected}", cell)


# --- kind: le-budget ----------------------------------------------------------------------


def check_le_budget(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    data = load_json(root, table.options["file"], where)
    try:
        seeds = list(data["seeds"])
        supervised = [pct(v) for v in data["supervised"]]
        svm = [pct(v) for v in data["svm"]]
        budgets: dict[tuple[str, int], dict[str, list[float]]] = {}
        for method, runs in data["methods"].items():
            for run in runs.values():
                budgets[(method, int(run["pretrain_epochs"]))] = {
                    "finetune": [pct(v) for v in run["finetune"]], "probe": [pct(v) for v in run["probe"]]}
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{where}: {table.options['file']} is not a le_pretraining_budget.py JSON") from None
    k = str(data.get("k"))
    for rel in filter(None, table.options.get("extra", "").split(",")):
        extra = load_json(root, rel, where)
        try:
            for (method, row_k), slot in _le_values(extra).items():
                if row_k == k and method in extra["pretrain"]:
                    if sorted(r["seed"] for r in extra["rows"] if r["method"] == method) != seeds:
                        raise BadInput(f"{where}: {rel} has other seeds than {table.options['file']}")
                    budgets[(method, int(extra["pretrain"][method]["epochs"]))] = slot
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{where}: {rel} is not a label-efficiency results JSON") from None
    methods = {m for m, _ in budgets} | {"supervised"}
    columns = [clean(c).lower() for c in table.header]
    for cells in table.rows:
        label = cells[0]
        key = row_key(label, methods)
        if key in ("supervised", "svm"):
            slot = {"finetune": supervised if key == "supervised" else svm, "probe": []}
        elif key is not None and "pretraining epochs" in columns:
            epochs = re.match(r"\d+", clean(cells[columns.index("pretraining epochs")]))
            slot = budgets.get((key, int(epochs.group(0)))) if epochs else None
            if slot is None:
                report.unknown(table, f"row '{label}': no {key} run with that pretraining budget in the cited files")
                continue
        else:
            report.unknown(table, f"row '{label}' names no method of the cited files")
            continue
        for column, cell in zip(table.header[1:], cells[1:]):
            head = clean(column).lower()
            if head == "pretraining epochs":
                continue
            if "fine-tune" in head:
                check_stat(report, table, label, column, cell, slot["finetune"])
            elif head.startswith("probe"):
                check_stat(report, table, label, column, cell, slot["probe"])
            elif head.startswith("margin over no pretraining"):
                diff = [a - b for a, b in zip(slot["finetune"], supervised)]
                check_stat(report, table, label, column, cell, diff, signed=True)
            elif "svm" in head:
                diff = [a - b for a, b in zip(slot["finetune"], svm)]
                check_stat(report, table, label, column, cell, diff, signed=True)
            else:
                report.unknown(table, f"column '{column}' is not one kind=le-budget knows")
                return


# --- kind: printed-le ---------------------------------------------------------------------


def check_printed_le(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    path = root / table.options["file"]
    if not path.is_file():
        raise BadInput(f"{where}: cited file {table.options['file']} does not exist")
    cited, plain = read_tables(path, table.options["file"])
    printed: dict[tuple[str, str], str] = {}
    for source in cited + plain:
        for cells in source.rows:
            for column, cell in zip(source.header[1:], cells[1:]):
                printed[(clean(cells[0]).lower(), clean(column).lower())] = cell
    methods = {m for m, _ in printed}
    for cells in table.rows:
        label = cells[0]
        key = row_key(label, methods)
        if key is None:
            report.unknown(table, f"row '{label}' is not in {table.options['file']}")
            continue
        for column, cell in zip(table.header[1:], cells[1:]):
            k = _k_of(column)
            source = printed.get((key, f"k={k}")) if k else None
            if source is None:
                report.unknown(table, f"row '{label}', column '{column}': not in {table.options['file']}")
                continue
            report.cells += 1
            want = re.match(rf"({NUMBER})(?: ± ({NUMBER}))? \(({NUMBER})\)(?: n=(\d+))?", clean(source))
            have = re.match(rf"({NUMBER})(?: ± ({NUMBER}))?(?: \((?:probe )?({NUMBER})\))?", clean(cell))
            if not want or not have:
                report.wrong(table, label, column, clean(source), cell)
                continue
            n = int(want.group(4) or 1)
            if have.group(1) != want.group(1) or (have.group(3) and have.group(3) != want.group(3)) or (
                have.group(2) is not None and (n < 2 or have.group(2) != want.group(2))
            ):
                expected = want.group(1) + (f" ± {want.group(2)}" if n > 1 else "") + f" ({want.group(3)})"
                report.wrong(table, label, column, expected, cell)


# --- kind: knobs --------------------------------------------------------------------------


def _snap(values: list[float], n_test: int | None) -> list[float]:
    """Per-seed accuracies stored rounded to 0.01 %: back to the exact correct/n_test they round."""
    if not n_test:
        return values
    return [100.0 * round(v * n_test / 100.0) / n_test for v in values]


def check_knobs(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    data = load_json(root, table.options["file"], where)
    n_test = int(table.options["n_test"]) if "n_test" in table.options else None
    method = table.options.get("method")
    try:
        configs: dict[frozenset, dict[str, dict[str, list[float]]]] = {}
        for config in data["configs"].values():
            results = config["results"]
            if "accuracy" in results:  # one method's results, named by method=
                results = {method: results}
            configs[frozenset(config["set"])] = {
                m: {"accuracy": _snap(r["accuracy"], n_test), "tta": _snap(r.get("tta") or [], n_test)}
                for m, r in results.items()}
    except (KeyError, TypeError, AttributeError):
        raise BadInput(f"{where}: {table.options['file']} is not a knobs JSON (configs: set, results)") from None
    if "defaults" in table.options and frozenset() not in configs:
        _, by = _reproduce_file(root, table.options["defaults"], where)
        configs[frozenset()] = {
            m: {"accuracy": [pct(e["accuracy"]) for _, e in sorted(seeds.items())],
                "tta": [pct(e["tta"]["accuracy"]) for _, e in sorted(seeds.items()) if e.get("tta")]}
            for m, seeds in by.items()}
    unchecked = unchecked_columns(table)
    for cells in table.rows:
        label = cells[0]
        settings = frozenset(re.findall(r"`([^`=]+=[^`]+)`", label))
        results = configs.get(settings)
        if results is None:
            report.unknown(table, f"row '{label}': no configuration with exactly these settings in "
                                  f"{table.options['file']}"
                                  + (" (name them in backticks)" if not settings else ""))
            continue
        for column, cell in zip(table.header[1:], cells[1:]):
            head = clean(column).lower()
            if any(head.startswith(u) for u in unchecked):
                continue
            who, what = _knob_column(head, method)
            if who is None:
                report.unknown(table, f"column '{column}' is not one kind=knobs knows")
                return
            slot = results.get(who)
            if slot is None:
                report.wrong(table, label, column, f"no {who} results", cell)
            elif what == "per seed":
                check_per_seed(report, table, label, column, cell, slot["accuracy"])
            else:
                check_stat(report, table, label, column, cell, slot[what])


def _knob_column(head: str, method: str | None) -> tuple[str | None, str]:
    """('mae', 'tta') for 'MAE with TTA %'; (method=, 'accuracy') for 'fine-tune %'."""
    columns = (("with tta %", "tta"), ("fine-tune %", "accuracy"), ("per seed", "per seed"), ("%", "accuracy"))
    for suffix, what in columns:
        if head == suffix:
            return method, what
        if head.endswith(" " + suffix):
            return head[: -len(suffix) - 1].strip(), what
    return None, ""


# --- kind: paired -------------------------------------------------------------------------


def check_paired(table: Table, root: Path, report: Report) -> None:
    """Columns 'A → B' (means without and with a change) and 'paired (w/t/l)' after each."""
    where = f"{table.doc}:{table.line}"

    def load(option: str) -> list[tuple[str, list[int], dict[str, dict[int, dict]]]]:
        return [(rel, *_reproduce_file(root, rel, where)) for rel in table.options.get(option, "").split(",") if rel]

    pairs = [(load("base"), load("file")), (load("base2"), load("file2"))]
    if not pairs[0][0]:
        raise BadInput(f"{where}: kind=paired needs base= (the runs without the change) beside file= (with it)")
    for cells in table.rows:
        label = cells[0]
        key = row_key(label, {m for _, _, by in pairs[0][1] for m in by})
        if key is None:
            report.unknown(table, f"row '{label}' names no method of {table.options['file']}")
            continue
        pair_index, diffs = -1, None
        for column, cell in zip(table.header[1:], cells[1:]):
            head, text = clean(column).lower(), clean(cell)
            if "→" in head:
                pair_index += 1
                diffs = None
                if text == "-":
                    continue
                if pair_index >= len(pairs):
                    report.unknown(table, f"column '{column}': no base{pair_index + 1}=/file{pair_index + 1}= for it")
                    return
                sides = []
                for files in pairs[pair_index]:
                    found = [(rel, seeds, by[key]) for rel, seeds, by in files if key in by]
                    if not found:
                        report.unknown(table, f"row '{label}', column '{column}': no {key} runs in the cited files")
                        break
                    rel, seeds, runs = found[0]
                    sides.append({s: pct(runs[s]["accuracy"]) for s in seeds if s in runs})
                else:
                    seeds = sorted(set(sides[0]) & set(sides[1]))
                    diffs = [sides[1][s] - sides[0][s] for s in seeds]
                    _check_arrow(report, table, label, column, text, seeds, [sides[0][s] for s in seeds],
                                 [sides[1][s] for s in seeds])
            elif head.startswith("paired"):
                if text == "-" or diffs is None:
                    continue
                _check_paired_cell(report, table, label, column, cell, diffs)
            else:
                report.unknown(table, f"column '{column}' is not one kind=paired knows")
                return


def _check_arrow(report: Report, table: Table, label: str, column: str, text: str,
                 seeds: list[int], without: list[float], with_: list[float]) -> None:
    match = re.fullmatch(rf"(?:(\d+)-(\d+):\s*)?({NUMBER})\s*→\s*({NUMBER})", text)
    report.cells += 2
    if not match:
        report.wrong(table, label, column, "'A → B' or 'S-T: A → B'", text)
        return
    if match.group(1) and list(range(int(match.group(1)), int(match.group(2)) + 1)) != seeds:
        report.wrong(table, label, column, f"seeds {seeds[0]}-{seeds[-1]}", text)
    a, b = statistics.fmean(without), statistics.fmean(with_)
    if not (holds(match.group(3), a) and holds(match.group(4), b)):
        report.wrong(table, label, column, f"{fmt(a, match.group(3))} → {fmt(b, match.group(4))}", text)


def _check_paired_cell(report: Report, table: Table, label: str, column: str, cell: str, diffs: list[float]) -> None:
    """'+0.67 (5/0/0)': mean paired difference, then wins/ties/losses by seed."""
    match = re.fullmatch(rf"({NUMBER})\s*\((\d+)/(\d+)/(\d+)\)", clean(cell))
    report.cells += 2
    wins = sum(d > 1e-9 for d in diffs)
    losses = sum(d < -1e-9 for d in diffs)
    expected = f"{statistics.fmean(diffs):+.2f} ({wins}/{len(diffs) - wins - losses}/{losses})"
    if not match or not holds(match.group(1), statistics.fmean(diffs)) or (
        [int(match.group(i)) for i in (2, 3, 4)] != [wins, len(diffs) - wins - losses, losses]
    ):
        report.wrong(table, label, column, expected, cell)


# --- kind: probe --------------------------------------------------------------------------

_PROBE_COLUMNS = (("linear probe", "linear_probe_cv"), ("weighted knn", "knn_weighted"), ("knn", "knn"))


def check_probe(table: Table, root: Path, report: Report) -> None:
    """A ``mnist-ssl probe --out`` JSON: rows name a pooling (``cls``, ``cls+mean``, ``mean``,
    ``last4``, ``pixels``) and an encoder (``pretrained`` or ``random init``) in their cells; columns
    ``linear probe %``, ``kNN %``, ``weighted kNN %``, ``dim``. ``file[TEXT]=PATH``: rows whose
    first cell contains TEXT read PATH."""
    default = table.options["file"]
    overrides = _row_files(table)
    header = [clean(h).lower() for h in table.header]
    for row in table.rows:
        label = clean(row[0]).lower()
        rel = next((path for text, path in overrides if text in label), default)
        data = load_json(root, rel, f"{table.doc}:{table.line}")
        cells = " ".join(clean(c).lower() for c in row[:3])
        if "pixels" in cells:
            entry = data.get("pixels")
        else:
            pool = next((p for p in ("last4", "cls+mean", "mean", "cls") if re.search(rf"(?<![\w+]){re.escape(p)}(?![\w+])", cells)), None)
            encoder = "random_init" if "random" in cells else "pretrained" if "pretrained" in cells else None
            entry = data.get("features", {}).get(pool, {}).get(encoder) if pool and encoder else None
        if entry is None:
            report.unknown(table, f"row '{row[0]}': names no pooling and encoder that {rel} holds")
            continue
        for head, cell in zip(header, row):
            if head == "dim":
                if clean(cell) not in ("-", "") and clean(cell) != str(entry.get("dim")):
                    report.wrong(table, row[0], head, str(entry.get("dim")), cell)
                continue
            key = next((k for name, k in _PROBE_COLUMNS if head.startswith(name)), None)
            if key is not None:
                check_stat(report, table, row[0], head, cell, [pct(entry[key]["accuracy"])])


# --- kind: numbers (figures in a paragraph) -----------------------------------------------


def _numbers_reproduce(data: dict, where: str, rel: str, others: list[dict]) -> Callable[[str, list[str]], float]:
    """METHOD is a method of ``file``; METHOD@2 the same method in ``file2`` (paired by seed)."""
    by_file: list[dict[str, dict[int, dict]]] = []
    for source in [data, *others]:
        by_file.append({})
        for entry in list(source["runs"]) + list(source.get("baselines", [])):
            by_file[-1].setdefault(entry["method"], {})[entry["seed"]] = entry
    fields = {"mean": ("accuracy",), "std": ("accuracy",), "min": ("accuracy",), "tta": ("tta", "accuracy"),
              "tta_std": ("tta", "accuracy"), "probe": ("linear_probe", "accuracy"), "knn": ("knn", "accuracy")}

    def series(method: str, path: tuple[str, ...]) -> dict[int, float]:
        method, _, number = method.partition("@")
        if number and not (number.isdigit() and 2 <= int(number) <= len(by_file)):
            raise BadInput(f"{where}: {method}@{number}: no file{number}= in the claims comment")
        by = by_file[int(number) - 1 if number else 0]
        if method not in by:
            raise BadInput(f"{where}: {table_file(number, rel)} has no {method} runs")
        out = {}
        for seed, entry in by[method].items():
            for key in path:
                entry = entry[key]
            out[seed] = pct(entry)
        return out

    def stat(name: str, args: list[str]) -> float:
        if name in ("diff", "diff_std", "wins", "ties", "losses") and len(args) == 2:
            a, b = series(args[0], ("accuracy",)), series(args[1], ("accuracy",))
            diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
            if name in ("diff", "diff_std"):
                return statistics.fmean(diffs) if name == "diff" else statistics.stdev(diffs)
            wins, losses = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
            return float({"wins": wins, "losses": losses, "ties": len(diffs) - wins - losses}[name])
        if name == "errors" and len(args) == 1:
            method, _, number = args[0].partition("@")
            runs = by_file[int(number) - 1 if number else 0].get(method, {}).values()
            return float(sum(round(e["n_test"] * (1 - e["accuracy"])) for e in runs))
        if name in fields and len(args) == 1:
            values = list(series(args[0], fields[name]).values())
            if name == "min":
                return min(values)
            return statistics.stdev(values) if name.endswith("std") else statistics.fmean(values)
        raise KeyError(name)

    return stat


def _numbers_label_efficiency(data: dict, where: str, rel: str) -> Callable[[str, list[str]], float]:
    values = _le_values(data)

    def get(method: str, k: str, what: str = "finetune") -> list[float]:
        if (method, k) not in values or not values[(method, k)].get(what):
            raise BadInput(f"{where}: {rel} has no {method} rows at k={k}")
        return values[(method, k)][what]

    def stat(name: str, args: list[str]) -> float:
        if name == "diff" and len(args) == 3:
            a, b = get(args[0], args[2]), get(args[1], args[2])
            return statistics.fmean(x - y for x, y in zip(a, b))
        if name in ("mean", "std", "probe", "knn", "semi") and len(args) == 2:
            series = get(args[0], args[1], name if name in ("probe", "knn", "semi") else "finetune")
            return statistics.stdev(series) if name == "std" else statistics.fmean(series)
        raise KeyError(name)

    return stat


def _numbers_le_budget(data: dict, where: str, rel: str) -> Callable[[str, list[str]], float]:
    base = {"supervised": [pct(v) for v in data["supervised"]], "svm": [pct(v) for v in data["svm"]]}

    def run(method: str, epochs: str) -> dict:
        for entry in data["methods"].get(method, {}).values():
            if str(entry["pretrain_epochs"]) == epochs:
                return entry
        raise BadInput(f"{where}: {rel} has no {method} run of {epochs} pretraining epochs")

    def stat(name: str, args: list[str]) -> float:
        if len(args) == 1 and args[0] in base and name in ("mean", "std"):
            series = base[args[0]]
        elif len(args) == 2 and name in ("mean", "std", "probe", "margin", "vs_svm"):
            entry = run(*args)
            finetune = [pct(v) for v in entry["finetune"]]
            series = {"probe": [pct(v) for v in entry["probe"]],
                      "margin": [a - b for a, b in zip(finetune, base["supervised"])],
                      "vs_svm": [a - b for a, b in zip(finetune, base["svm"])]}.get(name, finetune)
        else:
            raise KeyError(name)
        return statistics.stdev(series) if name == "std" else statistics.fmean(series)

    return stat


def _numbers_bench_reproduce(data: dict) -> Callable[[str, list[str]], float]:
    """bench_reproduce.py: wall (s), run_time (the runs' summed s), total(METHOD), pss_gb (peak PSS sum)."""
    totals = {r["method"]: r["total"] for r in data["runs"]}

    def stat(name: str, args: list[str]) -> float:
        if name == "wall" and args == [""]:
            return data["wall_time_s"]
        if name == "run_time" and args == [""]:
            return sum(totals.values())
        if name == "pss_gb" and args == [""]:
            return data["sampled_tree"]["peak_sum_pss_mb"] / 1000
        if name == "total" and len(args) == 1:
            return totals[args[0]]
        raise KeyError(name)

    return stat


def _numbers_bench_threads(data: dict) -> Callable[[str, list[str]], float]:
    """benchmarks/bench_threads.py: slowdown(OBJECTIVE) = median step at 2 threads over 1 thread
    with a busy neighbour; tail_slowdown(OBJECTIVE) the same for the slowest step."""
    rows = {(r["objective"], r["threads"], r["neighbour"]): r for r in data["rows"]}

    def stat(name: str, args: list[str]) -> float:
        field = {"slowdown": "median_ms", "tail_slowdown": "max_ms"}[name]
        return rows[(args[0], 2, True)][field] / rows[(args[0], 1, True)]["median_ms"]

    return stat


BENCHMARKS = {"reproduce": _numbers_bench_reproduce, "threads": _numbers_bench_threads}


def table_file(number: str, rel: str) -> str:
    return f"file{number}" if number else rel


NUMBER_CLAIM = re.compile(r"(\w+)\(([^()]*)\)")


def check_numbers(table: Table, root: Path, report: Report) -> None:
    """Each NAME(ARGS)=VALUE option: VALUE is the file's figure, and the paragraph shows it."""
    where = f"{table.doc}:{table.line}"
    rel = table.options["file"]
    data = load_json(root, rel, where)
    others = [load_json(root, table.options[f"file{n}"], where)
              for n in range(2, 10) if f"file{n}" in table.options]
    try:
        if data.get("benchmark") in BENCHMARKS:
            stat = BENCHMARKS[data["benchmark"]](data)
        elif "runs" in data:
            stat = _numbers_reproduce(data, where, rel, others)
        elif "methods" in data and "supervised" in data:
            stat = _numbers_le_budget(data, where, rel)
        elif "rows" in data:
            stat = _numbers_label_efficiency(data, where, rel)
        else:
            raise BadInput(f"{where}: {rel}: kind=numbers reads reproduce, label-efficiency, le-budget "
                           f"and {', '.join(BENCHMARKS)} benchmark files")
    except (KeyError, TypeError):
        raise BadInput(f"{where}: {rel} is not a file kind=numbers can read") from None
    text = clean(table.text)
    claims = [(k, v) for k, v in table.options.items() if not re.fullmatch(r"kind|file\d*", k)]
    if not claims:
        raise BadInput(f"{where}: kind=numbers comment names no figure (NAME(ARGS)=VALUE)")
    for key, shown in claims:
        match = NUMBER_CLAIM.fullmatch(key)
        if not match or not re.fullmatch(NUMBER, shown):
            raise BadInput(f"{where}: {key}={shown}: expected NAME(ARGS)=NUMBER, e.g. mean(infonce)=98.73")
        try:
            value = stat(match.group(1), [a.strip() for a in match.group(2).split(",")])
        except (KeyError, TypeError, IndexError):
            raise BadInput(f"{where}: {key}: not a figure {rel} gives "
                           "(see scripts/check_claims.py, kind=numbers)") from None
        report.cells += 1
        if not holds(shown, value):
            report.wrong(table, key, "value", fmt(value, shown, signed=shown[0] in "+-"), shown)
        elif not re.search(rf"(?<![\d.+])(?<![^\d]-){re.escape(shown)}(?![\d]|\.\d)", text.replace("−", "-")):
            report.unknown(table, f"{key}={shown}: the paragraph does not show {shown}")


KINDS: dict[str, Callable[[Table, Path, Report], None]] = {
    "reproduce": check_reproduce,
    "label-efficiency": check_label_efficiency,
    "le-budget": check_le_budget,
    "printed-le": check_printed_le,
    "knobs": check_knobs,
    "paired": check_paired,
    "numbers": check_numbers,
    "probe": check_probe,
}
