"""Recompute every number of the cited results tables in README.md and docs/*.md from their files.

    python scripts/check_claims.py [--root REPO] [DOC ...]

DOC defaults to README.md and every docs/*.md under REPO (default: the repository this
script lives in). Cited files are read relative to REPO, so a test can check an edited copy
of a document against the real measurements. Prints one ``ok`` line per table checked, one
line per wrong cell (document, line, table, row, column, expected, found), and exits 0 when
every cell holds, 1 when one does not, 2 on bad input (a cited file missing or unreadable,
an unknown kind, a comment that is not followed by a table), with one line on stderr.

How to tie a table to its file (this is how to add one)
--------------------------------------------------------
1. Keep the measurement: copy the run's ``metrics.json`` (or the label-efficiency
   ``results.json``, the ensemble script's ``--json``) to ``docs/measurements/NAME.json``.
2. Put one HTML comment on the line above the table (blank lines may separate them; one
   line, invisible on GitHub), and name the file in the visible text near the table too:

       <!-- claims: kind=reproduce file=docs/measurements/NAME.json -->
       | method | fine-tune % | min | with TTA % | ... |

3. Run ``python scripts/check_claims.py``: it prints ``ok`` for the table, or one line per
   cell that is not what the file gives. ``tests/test_claims.py`` runs it with the suite.

``kind`` says how to read the file (the list below), ``file`` is the measurement, relative
to the repository root; some kinds take more files. Rows are recognised by their first
cell, columns by their header, so a new row or column of a known shape needs nothing but
the comment. A row or column the kind does not know is an error (exit 1), never skipped in
silence: extend ROW_ALIASES or the kind's columns below instead. A cell that is ``-``, or
has no digit, claims nothing. Numbers are compared at the precision the cell shows (98.53
must be the two-decimal rounding of the file's mean); ``**`` and backticks are ignored.

Options of the kinds that read reproduce metrics: ``file[TEXT]=PATH`` (rows whose first
cell contains TEXT, ``_`` for a space, read PATH instead; the first match wins),
``method=M`` (rows whose first cell names no method are method M),
``unchecked=COLUMN[,COLUMN]`` (header prefixes, ``_`` for a space, of columns the file
cannot check, such as wall times from other logs; the ``ok`` line names them).

Figures in a paragraph are tied the same way, with kind=numbers right above the paragraph.
In README.md every table with a ``%`` in its header must carry a claims comment (a new
results table without one fails); in docs/*.md only the tables that carry one are checked.

Kinds
-----
reproduce    file = a ``mnist-ssl reproduce`` metrics.json (``runs`` and ``baselines``,
             one entry per method and seed); optional ``ensemble=`` the JSON written by
             ``scripts/ensemble_predictions.py --json`` for the same run folder (its
             per-method accuracies must equal the metrics file's).
             Rows: a method name first (``mae (zero-masking)``), ``ensemble ...``,
             ``RBF SVM``, ``1-NN``, ``logistic regression``.
             Columns: ``fine-tune %`` (mean ± sample std over the file's seeds; a
             parenthesised list of as many numbers as seeds is checked seed by seed, and a
             header ``(seeds 5, 6, 7)`` must name the file's seeds), ``min``, ``with TTA %``,
             ``linear probe %``, ``kNN % (k=5)`` (k must match), ``source document %`` or
             ``document %`` (the source document's figures, DOCUMENT_FIGURES), and the
             verdict column (header with ``met?`` or ``at or above``; cells like
             ``yes (+0.33) / yes``, ``**no (-0.47) / no (-0.13)**``,
             ``missed by 0.34 / **met**``: plain / TTA mean against the document's figure).
label-efficiency
             file = a ``mnist-ssl label-efficiency`` results JSON (``rows`` and
             ``baselines``). Rows: methods and the raw-pixel baselines. Columns ``k=N``
             or ``all ...``: ``mean ± std (probe P)`` of the fine-tuned accuracy over the
             seeds at that k, the probe mean in brackets; ``(3 seeds)`` in the header must
             match the file.
le-budget    file = the JSON of ``scripts/le_pretraining_budget.py`` (per method a default
             and a longer pretraining, per-seed fine-tune and probe accuracies, and the
             no-pretraining and SVM accuracies of the same seeds); optional ``extra=A,B``:
             label-efficiency JSONs of further pretraining budgets at the same k and seeds.
             Rows: method (first word) + the ``pretraining epochs`` cell; ``supervised``
             and ``RBF SVM`` rows. Columns: ``pretraining epochs``, ``fine-tune %``,
             ``probe %``, ``margin over no pretraining (per seed)`` and ``against the RBF
             SVM (per seed)`` (mean and per-seed differences in points).
knobs        file = a JSON of one-change-at-a-time runs (``configs``: name -> ``set``, the
             ``--set`` items, and ``results``: per method ``accuracy`` and ``tta`` per seed, or
             one method's, named by ``method=``); ``n_test=300`` snaps values stored at
             0.01 % back to correct/300; ``defaults=`` a reproduce metrics.json for the row
             without changes when the file has none. Rows: the ``key=value`` settings in
             backticks in the first cell (none: the defaults). Columns: ``MAE %``,
             ``supervised with TTA %``, ``fine-tune %`` and ``with TTA %`` (of ``method=``),
             ``per seed``.
paired       base = the runs without a change, file = with it (reproduce metrics.json);
             ``base2=``/``file2=`` a second pair (comma-separated lists: each row takes the
             first file that has its method). Columns ``... A → B`` (the two means,
             optionally ``5-9:`` naming the seeds) and ``paired (w/t/l)`` after each
             (``+0.67 (5/0/0)``: mean difference and wins/ties/losses over the seeds both
             sides have).
numbers      Figures in prose: the comment stands above a paragraph (several may be stacked)
             and lists ``NAME(ARGS)=VALUE`` items; each VALUE must be the file's figure at
             the precision written, and must appear in the paragraph as written (a signed
             VALUE with its sign), so the claim cannot drift from the text:
                 <!-- claims: kind=numbers file=A.json file2=B.json mean(infonce)=98.73 diff(infonce,infonce@2)=+0.53 -->
             ``METHOD@2`` is the method in ``file2`` (paired by seed). Reproduce metrics:
             mean, std, min, tta, tta_std, probe, knn (METHOD); diff, wins (METHOD, OTHER).
             Label-efficiency JSON: mean, std, probe (METHOD, K); diff (METHOD, OTHER, K).
             le_pretraining_budget.py JSON: mean, std, probe, margin, vs_svm (METHOD,
             EPOCHS); mean, std (supervised or svm).
printed-le   file = a markdown file of label-efficiency tables as the command printed them
             (no per-row JSON kept): each cell must equal the printed ``mean ± std (probe)``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

# The source document's accuracies (one run each; README's first table).
DOCUMENT_FIGURES = {"mae": 99.00, "infonce": 98.67, "mae-infonce": 98.00, "videomae": 98.00}

# First words of a row label that name a raw-pixel baseline or the ensemble, as the files call them.
ROW_ALIASES = (
    ("ensemble", "ensemble"),
    ("rbf svm", "svm"),
    ("1-nn", "knn"),
    ("logistic regression", "logreg"),
)

COMMENT = re.compile(r"<!--\s*claims:(.*?)-->")
NUMBER = r"[+-]?\d+(?:,\d{3})*(?:\.\d+)?"
MEAN_STD = re.compile(rf"^\s*({NUMBER})(?:\s*±\s*({NUMBER}))?")


class BadInput(Exception):
    """A claims comment or a cited file that cannot be checked at all (exit 2)."""


@dataclass
class Table:
    doc: str
    line: int  # 1-based line of the header row
    header: list[str]
    rows: list[list[str]]
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the paragraph a kind=numbers comment stands above

    @property
    def name(self) -> str:
        if not self.header:
            return "paragraph " + repr(self.text[:50] + ("..." if len(self.text) > 50 else ""))
        return "table '" + " | ".join(self.header[:3]) + (" | ..." if len(self.header) > 3 else "") + "'"


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    cells: int = 0

    def wrong(self, table: Table, row: str, column: str, expected: str, found: str) -> None:
        cell = f"row '{row}', column '{column}'" if table.header else f"figure {row}"
        self.errors.append(f"{table.doc}:{table.line}: {table.name}, {cell}: expected {expected}, found {found}")

    def unknown(self, table: Table, what: str) -> None:
        self.errors.append(f"{table.doc}:{table.line}: {table.name}: {what}")


# --- reading documents --------------------------------------------------------------------


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_separator(cells: list[str]) -> bool:
    return all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def read_tables(path: Path, doc: str) -> tuple[list[Table], list[Table]]:
    """(tables with a claims comment, tables without one), outside fenced code blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    cited: list[Table] = []
    plain: list[Table] = []
    pending: tuple[int, dict[str, str]] | None = None
    numbers: list[tuple[int, dict[str, str]]] = []
    in_code = False
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.lstrip().startswith("```"):
            in_code = not in_code
            i += 1
            continue
        if in_code:
            i += 1
            continue
        match = COMMENT.search(text)
        if match:
            if pending:
                raise BadInput(f"{doc}:{pending[0]}: claims comment not followed by a table")
            options = _options(match.group(1), f"{doc}:{i + 1}")
            if options["kind"] == "numbers":
                numbers.append((i + 1, options))
            else:
                pending = (i + 1, options)
            i += 1
            continue
        if numbers and text.strip():
            start = i
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("|", "```", "<!--")):
                i += 1
            paragraph = " ".join(line.strip() for line in lines[start:i])
            if not paragraph:
                raise BadInput(f"{doc}:{numbers[0][0]}: kind=numbers comment not followed by a paragraph")
            cited.extend(Table(doc, line, [], [], options, paragraph) for line, options in numbers)
            numbers = []
            continue
        if text.lstrip().startswith("|"):
            start = i
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(_split_row(lines[i]))
                i += 1
            if len(block) < 2 or not _is_separator(block[1]):
                continue
            table = Table(doc, start + 1, block[0], block[2:], pending[1] if pending else {})
            (cited if pending else plain).append(table)
            pending = None
            continue
        if pending and text.strip():
            raise BadInput(f"{doc}:{pending[0]}: claims comment not followed by a table")
        i += 1
    if pending or numbers:
        line = pending[0] if pending else numbers[0][0]
        raise BadInput(f"{doc}:{line}: claims comment not followed by a {'table' if pending else 'paragraph'}")
    return cited, plain


def _options(text: str, where: str) -> dict[str, str]:
    options = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise BadInput(f"{where}: claims comment: expected key=value, found {token!r}")
        options[key] = value
    for key in ("kind", "file"):
        if key not in options:
            raise BadInput(f"{where}: claims comment has no {key}=")
    return options


def load_json(root: Path, rel: str, where: str) -> Any:
    path = root / rel
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{where}: cited file {rel} does not exist") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{where}: cited file {rel} is not readable JSON ({err})") from None


# --- reading and comparing cells ----------------------------------------------------------


def clean(cell: str) -> str:
    return cell.replace("**", "").replace("`", "").strip()


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _holds(shown: str, value: float) -> bool:
    """Is `shown` the rounding of `value` at the precision it is written with?"""
    return abs(_num(shown) - value) <= 0.5 * 10 ** -_decimals(shown) + 1e-9


def _fmt(value: float, like: str, signed: bool = False) -> str:
    d = _decimals(like)
    return f"{value:+.{d}f}" if signed else f"{value:.{d}f}"


def _per_seed_list(cell: str) -> list[str] | None:
    """The numbers of a parenthesised list '(98.33, 99.00, 98.67)', or None if there is none."""
    for group in re.findall(r"\(([^()]*)\)", cell):
        parts = [p.strip() for p in group.split(",")]
        if len(parts) > 1 and all(re.fullmatch(NUMBER, p) for p in parts):
            return parts
    return None


def check_stat(
    report: Report, table: Table, row: str, column: str, cell: str, values: list[float], signed: bool = False
) -> None:
    """A cell 'mean', 'mean ± std', optionally followed by '(v1, v2, ...)' per seed."""
    text = clean(cell)
    if text in ("-", "") or not re.search(r"\d", text):
        return  # no number, no claim: '(same encoders)'
    if not values:
        report.wrong(table, row, column, "no value (the file has none)", cell)
        return
    match = MEAN_STD.match(text)
    if not match:
        report.wrong(table, row, column, "a number", cell)
        return
    report.cells += 1
    mean = statistics.fmean(values)
    shown_mean, shown_std = match.group(1), match.group(2)
    expected = _fmt(mean, shown_mean, signed)
    ok = _holds(shown_mean, mean)
    if shown_std is not None:
        if len(values) < 2:
            report.wrong(table, row, column, f"{expected} (one seed, no std)", cell)
            return
        std = statistics.stdev(values)
        expected += f" ± {_fmt(std, shown_std)}"
        ok = ok and _holds(shown_std, std)
    if not ok:
        report.wrong(table, row, column, expected, cell)
    per_seed = _per_seed_list(text[match.end():])
    if per_seed is not None:
        if len(per_seed) != len(values):
            report.wrong(table, row, column, f"{len(values)} per-seed values", f"{len(per_seed)} in {cell!r}")
        elif not all(_holds(s, v) for s, v in zip(per_seed, values)):
            report.wrong(table, row, column, "per seed " + ", ".join(_fmt(v, s, signed) for s, v in zip(per_seed, values)), cell)


def row_key(label: str, methods: set[str]) -> str | None:
    text = clean(label).lower()
    for prefix, key in ROW_ALIASES:
        if text.startswith(prefix):
            return key
    word = re.match(r"[a-z][a-z0-9-]*", text)
    return word.group(0) if word and word.group(0) in methods else None


def _pct(x: float) -> float:
    return 100.0 * x


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


def unchecked_columns(table: Table) -> list[str]:
    return [c.replace("_", " ").lower() for c in table.options.get("unchecked", "").split(",") if c]


def check_reproduce(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    files = {rel: _reproduce_file(root, rel, where) for rel in [table.options["file"], *dict(_row_files(table)).values()]}
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
            return [] if any(v is None for v in out) else [_pct(v) for v in out]

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
                shown = [p.strip() for p in text.split(",")]
                if text != "-":
                    report.cells += 1
                    if len(shown) != len(acc) or not all(re.fullmatch(NUMBER, s) and _holds(s, v) for s, v in zip(shown, acc)):
                        report.wrong(table, label, column, ", ".join(f"{v:.2f}" for v in acc), cell)
            elif head == "min":
                if text != "-":
                    report.cells += 1
                    if not _holds(text, min(acc)):
                        report.wrong(table, label, column, _fmt(min(acc), text), cell)
            elif head.startswith("with tta"):
                check_stat(report, table, label, column, cell, tta)
            elif head.startswith("linear probe"):
                check_stat(report, table, label, column, cell, values(lambda e: (e.get("linear_probe") or {}).get("accuracy")))
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
                    if figure is None or not _holds(text, figure):
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
        holds = round(mean, 2) >= figure - 1e-9
        expected = f"{'met' if holds else 'missed'} ({diff:+.2f})"
        if verdict != holds:
            report.wrong(table, label, column, f"{name}: {expected}", cell)
            continue
        by = re.search(rf"by ({NUMBER})", part)
        signed = re.search(r"\(([+-]\d+(?:\.\d+)?)\)", part)
        if by and not _holds(by.group(1), -diff):
            report.wrong(table, label, column, f"{name}: missed by {-diff:.2f}", cell)
        if signed and not _holds(signed.group(1), diff):
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
        slot["finetune"].append(_pct(row["finetune_accuracy"]))
        if row.get("probe_accuracy") is not None:
            slot["probe"].append(_pct(row["probe_accuracy"]))
    for row in sorted(data.get("baselines", []), key=lambda r: r["seed"]):
        out.setdefault((row["method"], str(row["k"])), {"finetune": [], "probe": []})["finetune"].append(_pct(row["accuracy"]))
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
        if not slot["probe"] or not _holds(probe.group(1), statistics.fmean(slot["probe"])):
            expected = _fmt(statistics.fmean(slot["probe"]), probe.group(1)) if slot["probe"] else "no probe"
            report.wrong(table, label, column, f"probe {expected}", cell)


# --- kind: le-budget ----------------------------------------------------------------------


def check_le_budget(table: Table, root: Path, report: Report) -> None:
    where = f"{table.doc}:{table.line}"
    data = load_json(root, table.options["file"], where)
    try:
        seeds = list(data["seeds"])
        supervised = [_pct(v) for v in data["supervised"]]
        svm = [_pct(v) for v in data["svm"]]
        budgets: dict[tuple[str, int], dict[str, list[float]]] = {}
        for method, runs in data["methods"].items():
            for run in runs.values():
                budgets[(method, int(run["pretrain_epochs"]))] = {
                    "finetune": [_pct(v) for v in run["finetune"]], "probe": [_pct(v) for v in run["probe"]]}
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
            m: {"accuracy": [_pct(e["accuracy"]) for _, e in sorted(seeds.items())],
                "tta": [_pct(e["tta"]["accuracy"]) for _, e in sorted(seeds.items()) if e.get("tta")]}
            for m, seeds in by.items()}
    unchecked = unchecked_columns(table)
    for cells in table.rows:
        label = cells[0]
        settings = frozenset(re.findall(r"`([^`=]+=[^`]+)`", label))
        results = configs.get(settings)
        if results is None:
            report.unknown(table, f"row '{label}': no configuration with exactly these settings in {table.options['file']}"
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
                shown = [p.strip() for p in clean(cell).split(",")]
                report.cells += 1
                if len(shown) != len(slot["accuracy"]) or not all(_holds(s, v) for s, v in zip(shown, slot["accuracy"])):
                    report.wrong(table, label, column, ", ".join(f"{v:.2f}" for v in slot["accuracy"]), cell)
            else:
                check_stat(report, table, label, column, cell, slot[what])


def _knob_column(head: str, method: str | None) -> tuple[str | None, str]:
    """('mae', 'tta') for 'MAE with TTA %'; (method=, 'accuracy') for 'fine-tune %'."""
    for suffix, what in (("with tta %", "tta"), ("fine-tune %", "accuracy"), ("per seed", "per seed"), ("%", "accuracy")):
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
                    sides.append({s: _pct(runs[s]["accuracy"]) for s in seeds if s in runs})
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
    if not (_holds(match.group(3), a) and _holds(match.group(4), b)):
        report.wrong(table, label, column, f"{_fmt(a, match.group(3))} → {_fmt(b, match.group(4))}", text)


def _check_paired_cell(report: Report, table: Table, label: str, column: str, cell: str, diffs: list[float]) -> None:
    """'+0.67 (5/0/0)': mean paired difference, then wins/ties/losses by seed."""
    match = re.fullmatch(rf"({NUMBER})\s*\((\d+)/(\d+)/(\d+)\)", clean(cell))
    report.cells += 2
    wins = sum(d > 1e-9 for d in diffs)
    losses = sum(d < -1e-9 for d in diffs)
    expected = f"{statistics.fmean(diffs):+.2f} ({wins}/{len(diffs) - wins - losses}/{losses})"
    if not match or not _holds(match.group(1), statistics.fmean(diffs)) or (
        [int(match.group(i)) for i in (2, 3, 4)] != [wins, len(diffs) - wins - losses, losses]
    ):
        report.wrong(table, label, column, expected, cell)


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
            out[seed] = _pct(entry)
        return out

    def stat(name: str, args: list[str]) -> float:
        if name in ("diff", "wins") and len(args) == 2:
            a, b = series(args[0], ("accuracy",)), series(args[1], ("accuracy",))
            diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
            return statistics.fmean(diffs) if name == "diff" else float(sum(d > 1e-9 for d in diffs))
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
        if (method, k) not in values or not values[(method, k)][what]:
            raise BadInput(f"{where}: {rel} has no {method} rows at k={k}")
        return values[(method, k)][what]

    def stat(name: str, args: list[str]) -> float:
        if name == "diff" and len(args) == 3:
            a, b = get(args[0], args[2]), get(args[1], args[2])
            return statistics.fmean(x - y for x, y in zip(a, b))
        if name in ("mean", "std", "probe") and len(args) == 2:
            series = get(args[0], args[1], "probe" if name == "probe" else "finetune")
            return statistics.stdev(series) if name == "std" else statistics.fmean(series)
        raise KeyError(name)

    return stat


def _numbers_le_budget(data: dict, where: str, rel: str) -> Callable[[str, list[str]], float]:
    base = {"supervised": [_pct(v) for v in data["supervised"]], "svm": [_pct(v) for v in data["svm"]]}

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
            finetune = [_pct(v) for v in entry["finetune"]]
            series = {"probe": [_pct(v) for v in entry["probe"]],
                      "margin": [a - b for a, b in zip(finetune, base["supervised"])],
                      "vs_svm": [a - b for a, b in zip(finetune, base["svm"])]}.get(name, finetune)
        else:
            raise KeyError(name)
        return statistics.stdev(series) if name == "std" else statistics.fmean(series)

    return stat


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
        if "runs" in data:
            stat = _numbers_reproduce(data, where, rel, others)
        elif "methods" in data and "supervised" in data:
            stat = _numbers_le_budget(data, where, rel)
        elif "rows" in data:
            stat = _numbers_label_efficiency(data, where, rel)
        else:
            raise BadInput(f"{where}: {rel}: kind=numbers reads reproduce, label-efficiency and le-budget files")
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
            raise BadInput(f"{where}: {key}: not a figure {rel} gives (see scripts/check_claims.py, kind=numbers)") from None
        report.cells += 1
        if not _holds(shown, value):
            report.wrong(table, key, "value", _fmt(value, shown, signed=shown[0] in "+-"), shown)
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
}


# --- main ---------------------------------------------------------------------------------


def check(root: Path, docs: list[Path]) -> tuple[Report, list[str]]:
    report = Report()
    done = []
    for path in docs:
        doc = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        cited, plain = read_tables(path, doc)
        if path.name == "README.md":
            for table in plain:
                if any("%" in h for h in table.header):
                    report.unknown(table, "a results table without a claims comment (see scripts/check_claims.py)")
        for table in cited:
            kind = table.options["kind"]
            if kind not in KINDS:
                raise BadInput(f"{doc}:{table.line}: unknown claims kind {kind!r} (known: {', '.join(KINDS)})")
            before_errors, before_cells = len(report.errors), report.cells
            KINDS[kind](table, root, report)
            if len(report.errors) == before_errors:
                shape = f"{len(table.rows)} rows" if table.header else "a paragraph"
                done.append(f"ok {doc}:{table.line} ({kind}, {table.options['file']}): "
                            f"{shape}, {report.cells - before_cells} numbers"
                            + "".join(f"; column '{c}' not checked" for c in unchecked_columns(table)))
    return report, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="repository root the cited files are read from")
    parser.add_argument("docs", nargs="*", type=Path, help="documents to check (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    docs = [p.resolve() for p in args.docs] or [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    try:
        for path in docs:
            if not path.is_file():
                raise BadInput(f"{path}: no such document")
        report, done = check(root, docs)
    except BadInput as err:
        print(err, file=sys.stderr)
        return 2
    for line in done:
        print(line)
    for line in report.errors:
        print(line)
    if report.errors:
        print(f"{len(report.errors)} claim(s) do not match their files", file=sys.stderr)
        return 1
    print(f"{len(done)} tables and paragraphs, {report.cells} numbers: every one matches its file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
