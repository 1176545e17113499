"""report.md and report.html from a run folder's files, and nothing else.

The report never re-runs or re-evaluates anything: it reads what
``mnist-ssl reproduce --out OUT`` wrote (docs/design.md, "The run folder")::

    OUT/metrics.json                               required (provenance + every run)
    OUT/runs/<method>/seed<k>/metrics.json         RunMetrics of one run
    OUT/runs/<method>/seed<k>/log.jsonl            per-epoch losses
    OUT/runs/<method>/seed<k>/features.npz         frozen test features x (N, D), y (N,)
    OUT/runs/<method>/seed<k>/predictions.npz      test probabilities and the misclassified images
    OUT/runs/<method>/seed<k>/reconstruction.png | views.png
    OUT/baselines/seed<k>.json                     raw-pixel baselines of sample k

and writes ``OUT/figures/*.png``, ``OUT/report.md`` and a self-contained
``OUT/report.html`` (figures embedded as base64 data URIs, CSS inline, no
external assets). Anything optional that is missing or unreadable is skipped
and listed under "Checks" at the end of the report; only a missing or corrupt
``metrics.json`` stops it (:class:`~mnist_ssl.errors.DataError`).

Run entries come from ``metrics.json["runs"]`` first; per-run
``metrics.json`` files add runs it lacks (listed under "Checks": a job killed
before its last write) and are checked against it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shlex
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mnist_ssl.errors import DataError
from mnist_ssl.fileio import atomic_write_bytes
from mnist_ssl.objectives.registry import METHODS
from mnist_ssl.evaluation.baselines import REFERENCE as BASELINE_REFERENCE
from mnist_ssl.evaluation.metrics import format_confusion, paired_comparison, pooled_interval, summary
from mnist_ssl.report import plots
from mnist_ssl.report.schema import SCHEMA_ID, validate_baseline_metrics, validate_metrics, validate_run_metrics

__all__ = [
    "DOCUMENT_FIGURES",
    "RUN_METHODS",
    "BASELINE_METHODS",
    "REFERENCES",
    "RunFolder",
    "load_metrics",
    "read_log",
    "collect",
    "build_report",
]

# The source document's accuracy (percent, one run each) for each method.
DOCUMENT_FIGURES = {name: spec.document_accuracy for name, spec in METHODS.items()
                    if spec.document_accuracy is not None}
# Row order of the tables (the registry's); methods not listed follow in alphabetical order.
RUN_METHODS = tuple(METHODS)
BASELINE_METHODS = ("svm", "knn", "logreg")
# Every method is compared seed by seed with these.
REFERENCES = ("supervised", "svm")

# Problems with optional files that mean "skip this file", not "stop".
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


# ----- reading the folder ---------------------------------------------------
@dataclass
class RunFolder:
    """Everything the report needs, read from one run folder."""

    root: Path
    metrics: dict[str, Any]
    runs: dict[str, dict[int, dict]] = field(default_factory=dict)  # method -> seed -> RunMetrics
    baselines: dict[str, dict[int, dict]] = field(default_factory=dict)  # method -> seed -> result
    notes: list[str] = field(default_factory=list)  # skipped files, validation problems

    def accuracies(self, method: str) -> dict[int, float]:
        """seed -> accuracy of a run method or a baseline."""
        source = self.runs.get(method) or self.baselines.get(method) or {}
        return {seed: e["accuracy"] for seed, e in source.items()}

    def tta_accuracies(self, method: str) -> dict[int, float]:
        """seed -> accuracy with test-time augmentation of a run method (the seeds that have it)."""
        return {seed: e["tta"]["accuracy"] for seed, e in self.runs.get(method, {}).items() if e.get("tta")}

    @property
    def classes(self) -> list[Any] | None:
        for group in (self.runs, self.baselines):
            for by_seed in group.values():
                for e in by_seed.values():
                    if e.get("classes"):
                        return list(e["classes"])
        return _config_value(self.metrics.get("config"), "data", {}).get("classes")

    @property
    def class_labels(self) -> list[str] | None:
        """How figures and tables name each of :attr:`classes`: an entry's ``class_names``, else
        the job config's ``data.class_names`` (an image folder's subfolders) at each class
        number, else the number itself (MNIST's digits)."""
        classes = self.classes
        if classes is None:
            return None
        for group in (self.runs, self.baselines):
            for by_seed in group.values():
                for e in by_seed.values():
                    names = e.get("class_names")
                    if isinstance(names, list) and len(names) == len(classes):
                        return [str(n) for n in names]
        names = (_config_value(self.metrics.get("config"), "data", {}) or {}).get("class_names")
        if isinstance(names, list) and all(isinstance(c, int) and 0 <= c < len(names) for c in classes):
            return [str(names[c]) for c in classes]
        return [str(c) for c in classes]

    @property
    def named_classes(self) -> bool:
        """Whether the classes have names of their own (not MNIST's digits)."""
        labels = self.class_labels
        return labels is not None and labels != [str(c) for c in self.classes]


def _config_value(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` of a job config that is one RunConfig dict or a dict
    method -> RunConfig dict (then the first method's value)."""
    if not isinstance(config, dict):
        return default
    if key in config:
        return config[key]
    for sub in config.values():
        if isinstance(sub, dict) and key in sub:
            return sub[key]
    return default


def load_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``run_dir/metrics.json``; a clear :class:`DataError` when it is
    missing, not JSON, not an object or of another schema."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"run folder {root} does not exist (expected the --out folder of `mnist-ssl reproduce`)")
    path = root / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path} is missing: {root} is not a finished run folder (written by `mnist-ssl reproduce --out`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read: {err}") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is corrupt (not valid JSON: {err}); rerun the job or restore the file") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path} is corrupt: expected a JSON object, found {type(obj).__name__}")
    if obj.get("schema") != SCHEMA_ID:
        raise DataError(f"{path} has schema {obj.get('schema')!r}, expected {SCHEMA_ID!r}: not an mnist-ssl metrics file")
    return obj


def read_log(
    path: str | os.PathLike, notes: list[str] | None = None, label: str | None = None
) -> dict[str, list[dict]]:
    """phase -> that phase's records of a ``log.jsonl``, in epoch order.

    A line that is not a JSON object with a numeric "loss" is skipped (and
    named in ``notes`` as ``label`` (default: the path) when notes are given):
    a run killed mid-write leaves half a line.
    """
    label = label or str(path)
    by_phase: dict[str, list[dict]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                float(rec["loss"])
            except (ValueError, KeyError, TypeError):
                if notes is not None:
                    notes.append(f"{label}: line {i} is not a log record; skipped")
                continue
            by_phase[str(rec.get("phase", "train"))].append(rec)
    for recs in by_phase.values():
        recs.sort(key=lambda r: r.get("epoch", 0))
    return dict(by_phase)


def _seed_of(name: str) -> int | None:
    m = re.fullmatch(r"seed(\d+)(?:\.json)?", name)
    return int(m.group(1)) if m else None


def _read_json(path: Path, folder: RunFolder) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        folder.notes.append(f"{path.relative_to(folder.root)}: unreadable ({err}); skipped")
        return None


def collect(run_dir: str | os.PathLike) -> RunFolder:
    """Read and check a run folder (see the module docstring for the layout)."""
    root = Path(run_dir)
    folder = RunFolder(root=root, metrics=load_metrics(root))
    folder.notes.extend(f"metrics.json: {p}" for p in validate_metrics(folder.metrics))
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    bases: dict[str, dict[int, dict]] = defaultdict(dict)

    # 1. The job's record. Invalid entries were reported above; skip them here.
    for e in folder.metrics.get("runs") or []:
        if not validate_run_metrics(e):
            runs[e["method"]].setdefault(e["seed"], e)
    for e in folder.metrics.get("baselines") or []:
        if not validate_baseline_metrics(e):
            bases[e["method"]].setdefault(e["seed"], e)

    # 2. Per-run files: add what metrics.json lacks, check what it has.
    for path in sorted(root.glob("runs/*/seed*/metrics.json")):
        rel = path.relative_to(root)
        seed = _seed_of(path.parent.name)
        e = _read_json(path, folder)
        if e is None or seed is None:
            continue
        problems = validate_run_metrics(e, str(rel))
        if problems:
            folder.notes.extend(problems)
            continue
        if (e["method"], e["seed"]) != (path.parent.parent.name, seed):
            folder.notes.append(f"{rel}: says method {e['method']!r} seed {e['seed']}, its folder says otherwise")
        known = runs[e["method"]].get(e["seed"])
        if known is None:
            # Typically a run finished after metrics.json was last written (a
            # killed job); it could also be left over from another job: say so.
            folder.notes.append(f"{rel}: run not in metrics.json; included")
            runs[e["method"]][e["seed"]] = e
        elif abs(known["accuracy"] - e["accuracy"]) > 1e-9:
            folder.notes.append(
                f"{rel}: accuracy {e['accuracy']} differs from metrics.json ({known['accuracy']}); metrics.json used"
            )

    # 3. Baseline files: a list of results (each with its seed), or an object
    #    holding one under "baselines"; the seed defaults to the file name's.
    for path in sorted(root.glob("baselines/seed*.json")):
        rel = path.relative_to(root)
        obj = _read_json(path, folder)
        if obj is None:
            continue
        entries = obj.get("baselines") if isinstance(obj, dict) else obj
        if not isinstance(entries, list):
            folder.notes.append(f"{rel}: expected a list of baseline results; skipped")
            continue
        for i, e in enumerate(entries):
            if isinstance(e, dict) and "seed" not in e and _seed_of(path.name) is not None:
                e = {**e, "seed": _seed_of(path.name)}
            problems = validate_baseline_metrics(e, f"{rel}[{i}]")
            if problems:
                folder.notes.extend(problems)
                continue
            known = bases[e["method"]].get(e["seed"])
            if known is None:
                folder.notes.append(f"{rel}[{i}]: {e['method']} seed {e['seed']} not in metrics.json; included")
                bases[e["method"]][e["seed"]] = e
            elif abs(known["accuracy"] - e["accuracy"]) > 1e-9:
                folder.notes.append(f"{rel}[{i}]: accuracy differs from metrics.json; metrics.json used")

    folder.runs = {m: dict(sorted(s.items())) for m, s in runs.items() if s}
    folder.baselines = {m: dict(sorted(s.items())) for m, s in bases.items() if s}
    return folder


def _ordered(names: Iterable[str], known: tuple[str, ...]) -> list[str]:
    names = set(names)
    return [m for m in known if m in names] + sorted(names - set(known))


# ----- numbers -> table cells -----------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    s = summary(values)
    return f"{_pct(s['mean'])} ± {_pct(s['std'])}"


def _correct(e: dict) -> int:
    conf = e.get("confusion")
    if conf:
        return int(sum(conf[i][i] for i in range(len(conf))))
    return int(round(e["accuracy"] * e["n_test"]))


def _wall(e: dict) -> float | None:
    """Seconds of one run (its "total", else the sum of its phases) or baseline."""
    wt = e.get("wall_time_s")
    if isinstance(wt, dict):
        if "total" in wt:
            return float(wt["total"])
        return float(sum(wt.values())) if wt else None
    return float(wt) if isinstance(wt, (int, float)) else None


def _headline_row(method: str, entries: dict[int, dict], is_run: bool) -> list[str]:
    es = list(entries.values())
    accs = [e["accuracy"] for e in es]
    probe = [e["linear_probe"]["accuracy"] for e in es if e.get("linear_probe")]
    knn = [e["knn"]["accuracy"] for e in es if e.get("knn")]
    tta = [e["tta"]["accuracy"] for e in es if e.get("tta")]
    lo, hi = pooled_interval([_correct(e) for e in es], [e["n_test"] for e in es])
    walls = [w for w in map(_wall, es) if w is not None]
    ns = sorted({e["n_test"] for e in es})
    doc = DOCUMENT_FIGURES.get(method)
    return [
        method,
        _mean_std(accs),
        _pct(min(accs)),
        _mean_std(tta) if tta else "–",
        _mean_std(probe) if is_run else "–",
        _mean_std(knn) if is_run else "–",
        f"{doc:.2f}" if doc is not None else "–",
        f"[{_pct(lo)}, {_pct(hi)}]",
        f"{np.mean(walls):.2f}" if walls else "–",
        str(len(es)),
        str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}",
    ]


# ----- the document model: rendered to both Markdown and HTML ---------------
@dataclass
class _Heading:
    level: int
    text: str


@dataclass
class _Text:
    text: str


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class _Image:
    path: str  # relative to the run folder
    caption: str


@dataclass
class _Code:
    text: str


def _md(blocks: list[Any]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, _Text):
            out.append(b.text)
        elif isinstance(b, _Table):
            cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(map(cell, b.header)) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(map(cell, r)) + " |" for r in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, _Image):
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        elif isinstance(b, _Code):
            out.append(f"```\n{b.text}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a;
       background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #1d232a; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
/* A table wider than the page scrolls by itself instead of running off the right edge
   (the results table is ~1500 px wide: tests/report/test_browser.py at 1366 px). */
table { border-collapse: collapse; margin: 1rem 0; font-size: 13.5px; display: block; max-width: 100%;
        overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; } td:first-child, th:first-child { text-align: left; font-weight: 600; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1.2rem 0; } img { max-width: 100%; border: 1px solid #e4e8ec; }
figcaption { color: #57606a; font-size: 13px; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: 12.5px; }
"""


def _html(blocks: list[Any], root: Path, title: str) -> str:
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, _Text):
            body.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, _Table):
            head = "".join(f"<th>{esc(str(h))}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, _Image):
            data = base64.b64encode((root / b.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, _Code):
            body.append(f"<pre>{esc(b.text)}</pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


# ----- sections ---------------------------------------------------------------
def _results_section(folder: RunFolder) -> list[Any]:
    run_methods = _ordered(folder.runs, RUN_METHODS)
    base_methods = _ordered(folder.baselines, BASELINE_METHODS)
    knn_ks = sorted({e["knn"]["k"] for s in folder.runs.values() for e in s.values() if e.get("knn")})
    header = [
        "method", "accuracy % (mean ± std)", "min %", "with TTA %", "linear probe %",
        f"kNN %{' (k=' + ','.join(map(str, knn_ks)) + ')' if knn_ks else ''}", "document %",
        "pooled 95% CI %", "wall time / run (s)", "seeds", "test images / seed",
    ]
    rows = [_headline_row(m, folder.runs[m], True) for m in run_methods]
    rows += [_headline_row(m, folder.baselines[m], False) for m in base_methods]
    blocks: list[Any] = [_Heading(2, "Results"), _Table(header, rows)]
    blocks.append(_Text(
        "Accuracy is on each seed's own test sample: the fine-tuned classifier for the methods, the "
        "classifier itself for the raw-pixel baselines (svm, knn, logreg). Linear probe and kNN use "
        "frozen encoder features. With TTA: the fine-tuned classifier's probabilities averaged over the "
        "test image and copies of it under the fine-tuning augmentation (eval.tta_views; the baselines "
        "have none). std is the sample std over seeds; the pooled interval is the Wilson "
        "95% interval of all seeds' test images counted together. The document column is the source "
        "document's single-run figure."
    ))
    if base_methods:
        ref = ", ".join(f"{m} {BASELINE_REFERENCE[m][0]:.2f} ± {BASELINE_REFERENCE[m][1]:.2f}"
                        for m in base_methods if m in BASELINE_REFERENCE)
        if ref:
            blocks.append(_Text(f"Reference for the baselines on the document's protocol (10 seeds): {ref}."))

    seeds = sorted({s for g in (folder.runs, folder.baselines) for by in g.values() for s in by})
    if seeds:
        per_seed = [[m] + [_pct(folder.accuracies(m)[s]) if s in folder.accuracies(m) else "–" for s in seeds]
                    for m in run_methods + base_methods]
        blocks += [_Heading(3, "Accuracy % per seed"), _Table(["method"] + [f"seed {s}" for s in seeds], per_seed)]
    return blocks + _recall_section(folder)


def _recall_section(folder: RunFolder) -> list[Any]:
    """Each method's recall of each class (mean over seeds), the columns named by the classes."""
    labels = folder.class_labels
    if labels is None:
        return []
    rows = []
    for group, order in ((folder.runs, RUN_METHODS), (folder.baselines, BASELINE_METHODS)):
        for m in _ordered(group, order):
            recalls = [e["recall"] for e in group[m].values()
                       if isinstance(e.get("recall"), list) and len(e["recall"]) == len(labels)]
            if not recalls:
                continue
            cells = []
            for i in range(len(labels)):
                values = [r[i] for r in recalls if r[i] is not None]  # None: no test image of the class
                cells.append(_pct(float(np.mean(values))) if values else "–")
            rows.append([m] + cells)
    if not rows:
        return []
    return [_Heading(3, "Recall % per class"), _Table(["method"] + labels, rows),
            _Text("The share of each class's test images given that class, mean over seeds.")]


_FROZEN_KINDS = (("linear_probe", "linear probe"), ("linear_probe_cv", "probe, C by CV"),
                 ("knn", "kNN"), ("knn_weighted", "weighted kNN (k=20)"))


def _frozen_section(folder: RunFolder) -> list[Any]:
    """Each frozen evaluation of the pretrained encoder beside the same at random initialisation
    (what pretraining has to beat), with the seeds on which pretraining is ahead."""
    methods = [m for m in _ordered(folder.runs, RUN_METHODS)
               if any(e.get("random_init") for e in folder.runs[m].values())]
    if not methods:
        return []
    header = ["method"]
    for _, name in _FROZEN_KINDS:
        header += [f"{name} %", "at random init %", "seeds ahead"]
    rows = []
    for m in methods:
        es = [e for e in folder.runs[m].values() if e.get("random_init")]
        row = [m]
        for key, _ in _FROZEN_KINDS:
            pairs = [(e[key]["accuracy"], e["random_init"][key]["accuracy"]) for e in es
                     if e.get(key) and e["random_init"].get(key)]
            if not pairs:
                row += ["–", "–", "–"]
                continue
            row += [_mean_std([a for a, _ in pairs]), _mean_std([b for _, b in pairs]),
                    f"{sum(a > b for a, b in pairs)} / {len(pairs)}"]
        rows.append(row)
    return [_Heading(3, "Frozen features against random initialisation"), _Table(header, rows), _Text(
        "Each probe on the frozen CLS features of the pretrained encoder, and of the same encoder at random "
        "initialisation (the run's seed): pretraining has learnt something only where it is ahead. "
        "Probe with C by CV: C chosen by 5-fold cross-validation on the training sample only; weighted kNN: "
        "20 cosine neighbours voting exp(cos / 0.07). For supervised both columns are its random encoder.")]


def _semi_section(folder: RunFolder) -> list[Any]:
    """The semi-supervised stage's student beside the fine-tuned classifier it started from (own rows)."""
    methods = [m for m in _ordered(folder.runs, RUN_METHODS) if any(e.get("semi") for e in folder.runs[m].values())]
    if not methods:
        return []
    rows = []
    for m in methods:
        es = [e for e in folder.runs[m].values() if e.get("semi")]
        kinds = sorted({e["semi"]["kind"] for e in es})
        pairs = [(e["semi"]["accuracy"], e["accuracy"]) for e in es]
        rows.append([f"{m} + semi ({', '.join(kinds)})", _mean_std([a for a, _ in pairs]),
                     _mean_std([b for _, b in pairs]), f"{sum(a > b for a, b in pairs)} / {len(pairs)}",
                     str(sorted({e["semi"]["unlabelled_images"] for e in es})[0])])
    return [_Heading(3, "With the semi-supervised stage"), _Table(
        ["method", "after the stage %", "fine-tuned (plain) %", "seeds ahead", "unlabelled images"], rows),
        _Text("The student of the semi-supervised stage (semi.*: distillation of the fine-tuned classifier's "
              "soft labels, or FixMatch pseudo-labels) on the same test sample; the plain fine-tuned numbers "
              "above are unchanged.")]


def _paired_section(folder: RunFolder) -> list[Any]:
    methods = _ordered(folder.runs, RUN_METHODS) + _ordered(folder.baselines, BASELINE_METHODS)
    rows, done = [], set()
    for ref in REFERENCES:
        if ref not in methods:
            continue
        ref_acc = folder.accuracies(ref)
        for m in methods:
            if m == ref or frozenset((m, ref)) in done:
                continue
            done.add(frozenset((m, ref)))
            acc = folder.accuracies(m)
            common = sorted(set(acc) & set(ref_acc))
            if not common:
                continue
            r = paired_comparison([acc[s] for s in common], [ref_acc[s] for s in common])
            rows.append([m, ref, str(r["n"]), f"{100 * r['mean_diff']:+.2f}", f"{100 * r['std_diff']:.2f}",
                         f"{r['wins']} / {r['ties']} / {r['losses']}"])
    # The same against the from-scratch ViT with test-time augmentation on both sides.
    ref_tta = folder.tta_accuracies("supervised")
    for m in _ordered(folder.runs, RUN_METHODS):
        acc = folder.tta_accuracies(m)
        common = sorted(set(acc) & set(ref_tta))
        if m == "supervised" or not common:
            continue
        r = paired_comparison([acc[s] for s in common], [ref_tta[s] for s in common])
        rows.append([f"{m} (TTA)", "supervised (TTA)", str(r["n"]), f"{100 * r['mean_diff']:+.2f}",
                     f"{100 * r['std_diff']:.2f}", f"{r['wins']} / {r['ties']} / {r['losses']}"])
    if not rows:
        return []
    return [
        _Heading(2, "Paired comparison"),
        _Text("Each method against the reference on the seeds both have; seed k of every method uses the "
              "same training and test sample, so the difference removes the sample-to-sample spread. "
              "Differences are in percentage points (method minus reference)."),
        _Table(["method", "vs", "paired seeds", "mean diff (points)", "std of diff", "wins / ties / losses"], rows),
    ]


def _figures_section(folder: RunFolder) -> list[Any]:
    root, notes = folder.root, folder.notes
    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    classes, labels = folder.classes, folder.class_labels
    blocks: list[Any] = [_Heading(2, "Figures")]

    def attempt(what: str, fn: Any) -> bool:
        try:
            fn()
            return True
        except _READ_ERRORS as err:
            notes.append(f"{what}: skipped ({type(err).__name__}: {err})")
            return False

    # Confusion summed over seeds, for every method with matrices of the right size.
    confusions: dict[str, np.ndarray] = {}
    for group, order in ((folder.runs, RUN_METHODS), (folder.baselines, BASELINE_METHODS)):
        for m in _ordered(group, order):
            mats = [np.asarray(e["confusion"]) for e in group[m].values()]
            if classes is not None and any(c.shape != (len(classes), len(classes)) for c in mats):
                notes.append(f"confusion of {m}: size differs from the {len(classes)} classes; left out")
                continue
            confusions[m] = np.sum(mats, axis=0)
    if confusions and classes is None:
        notes.append("confusion grid: no run or baseline names its classes; left out")
    elif confusions:
        if attempt("confusion grid", lambda: plots.plot_confusion_grid(confusions, labels, fig_dir / "confusion_grid.png")):
            blocks.append(_Image("figures/confusion_grid.png", "Confusion matrices summed over seeds (rows: true class)."))

    # Loss bands from every seed's log.jsonl.
    curves: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for m in _ordered({p.name for p in (root / "runs").glob("*") if p.is_dir()}, RUN_METHODS):
        for log in sorted((root / "runs" / m).glob("seed*/log.jsonl")):
            try:
                for phase, recs in read_log(log, notes, str(log.relative_to(root))).items():
                    curves[phase][m].append([float(r["loss"]) for r in recs])
            except _READ_ERRORS as err:
                notes.append(f"{log.relative_to(root)}: unreadable ({err}); skipped")
    for phase in _ordered(curves, plots.PHASE_ORDER):
        name = f"figures/loss_{phase}.png"
        if attempt(f"{phase} loss", lambda: plots.plot_loss_bands(curves[phase], root / name, phase)):
            blocks.append(_Image(name, f"{phase} loss per epoch: mean over seeds, band from min to max."))

    # Reconstruction / views grids and features of each method's first seed.
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in _ordered({p.name for p in (root / "runs").glob("*") if p.is_dir()}, RUN_METHODS):
        seed_dirs = sorted((d for d in (root / "runs" / m).glob("seed*") if _seed_of(d.name) is not None),
                           key=lambda d: _seed_of(d.name))
        if not seed_dirs:
            continue
        first = seed_dirs[0]
        for kind in ("reconstruction", "views"):
            src = first / f"{kind}.png"
            if src.is_file():
                name = f"figures/{kind}_{m}.png"
                if attempt(str(src.relative_to(root)), lambda: atomic_write_bytes(root / name, src.read_bytes())):
                    blocks.append(_Image(name, f"{m}, {first.name}: {kind}."))
        npz = first / "features.npz"
        if npz.is_file():
            def load(npz: Path = npz, m: str = m) -> None:
                with np.load(npz, allow_pickle=False) as z:
                    x, y = np.asarray(z["x"]), np.asarray(z["y"]).ravel()
                if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
                    raise ValueError(f"x {x.shape} and y {y.shape} are not (N, D) and (N,)")
                features[m] = (x, y)
            attempt(str(npz.relative_to(root)), load)
    if features:
        if attempt("feature maps", lambda: plots.plot_feature_maps(features, fig_dir / "feature_maps.png", labels)):
            blocks.append(_Image("figures/feature_maps.png",
                                 "Frozen test features of each method's first seed, 2-D PCA, coloured by class."))
    errors = _misclassified(folder, attempt)
    if errors and attempt("misclassified images",
                          lambda: plots.plot_misclassified(errors, fig_dir / "misclassified.png", MISTAKES_SHOWN)):
        counts = "; ".join(f"{m}: {caption}" for m, (caption, _) in errors.items())
        blocks.append(_Image("figures/misclassified.png",
                             f"Test images each fine-tuned ViT got wrong (sK: seed K, true class → "
                             f"predicted class). {counts}."))
    if len(blocks) == 1:
        return []
    return blocks


MISTAKES_SHOWN = 12  # misclassified images per method in the report's figure


def _misclassified(folder: RunFolder, attempt: Any) -> dict[str, tuple[str, list[tuple[np.ndarray, str]]]]:
    """method -> (caption, [(image, "sK: true→predicted"), ...]) from every seed's predictions.npz,
    the most confident mistakes first (runs made before the file existed have none, and a method
    with no such file is left out)."""
    root, labels = folder.root, folder.class_labels
    out: dict[str, tuple[str, list[tuple[np.ndarray, str]]]] = {}
    for m in _ordered(folder.runs, RUN_METHODS):
        mistakes: list[tuple[float, np.ndarray, str]] = []
        n_images = n_seeds = 0
        for seed, e in sorted(folder.runs[m].items()):
            npz = root / "runs" / m / f"seed{seed}" / "predictions.npz"
            if not npz.is_file():
                continue

            def load(npz: Path = npz, seed: int = seed, e: dict = e) -> None:
                nonlocal n_images, n_seeds
                with np.load(npz, allow_pickle=False) as z:
                    probs, y = np.asarray(z["probs"]), np.asarray(z["y"]).ravel()
                    index, images = np.asarray(z["error_index"]).ravel(), np.asarray(z["error_images"])
                if probs.ndim != 2 or probs.shape[0] != y.shape[0] or images.shape[0] != index.shape[0]:
                    raise ValueError(f"probs {probs.shape}, y {y.shape}, error_images {images.shape} "
                                     f"and error_index {index.shape} do not fit together")
                predicted = probs.argmax(axis=1)
                if y.shape[0] != e["n_test"] or int((predicted == y).sum()) != _correct(e):
                    raise ValueError(f"{int((predicted == y).sum())} of {y.shape[0]} right, but the run's "
                                     f"metrics say {_correct(e)} of {e['n_test']}")
                if not np.array_equal(index, np.flatnonzero(predicted != y)):
                    raise ValueError("error_index does not list the images its probabilities get wrong")
                name = (lambda i: labels[i] if labels is not None and 0 <= i < len(labels) else str(i))
                for i, image in zip(index, images):
                    mistakes.append((float(probs[i, predicted[i]]), image.astype(np.float64) / 255.0,
                                     f"s{seed}: {name(int(y[i]))}→{name(int(predicted[i]))}"))
                n_images += y.shape[0]
                n_seeds += 1
            attempt(str(npz.relative_to(root)), load)
        if n_seeds:
            # The most confident mistakes first: the ones a reader learns most from.
            mistakes.sort(key=lambda t: -t[0])
            shown = "" if len(mistakes) <= MISTAKES_SHOWN else f"; the {MISTAKES_SHOWN} most confident shown"
            out[m] = (f"{len(mistakes)} of {n_images} test images wrong over {_count(n_seeds, 'seed')}{shown}",
                      [(image, label) for _, image, label in mistakes])
    return out


def _confusion_text_section(folder: RunFolder) -> list[Any]:
    blocks: list[Any] = []
    for m in _ordered(folder.runs, RUN_METHODS):
        seed, e = next(iter(folder.runs[m].items()))
        blocks.append(_Text(f"{m}, seed {seed}: accuracy {_pct(e['accuracy'])}%"))
        blocks.append(_Code("Confusion Matrix:\n" + format_confusion(e["confusion"])))
    if not blocks:
        return []
    head: list[Any] = [_Heading(2, "Confusion matrices as the document prints them")]
    if folder.named_classes:
        head.append(_Text(f"Rows (true class) and columns (predicted) in the order {', '.join(folder.class_labels)}."))
    return head + blocks


def _provenance_section(folder: RunFolder) -> list[Any]:
    mt = folder.metrics
    cmd = mt.get("command")
    cmd_text = shlex.join(cmd) if isinstance(cmd, list) else str(cmd or "–")
    machine = mt.get("machine") if isinstance(mt.get("machine"), dict) else {}
    config = mt.get("config") if isinstance(mt.get("config"), dict) else {}
    threads = next((d[k] for d, k in ((machine, "threads"), (machine, "torch_threads"), (mt, "threads"))
                    if k in d), _config_value(config, "threads", "–"))
    items = [["command", cmd_text], ["created", str(mt.get("created", "–"))]]
    # Optional job-level fields a writer may add: shown when present.
    for key, label in (("finished", "finished"), ("wall_time_s", "job wall time (s)"), ("seeds", "seeds"),
                       ("complete", "complete")):
        if key in mt:
            items.append([label, mt[key] if isinstance(mt[key], str) else json.dumps(mt[key])])
    items.append(["threads", str(threads)])
    blocks: list[Any] = [_Heading(2, "Provenance"), _Table(["item", "value"], items)]
    if mt.get("complete") is False:
        blocks.insert(1, _Text("The job was interrupted: this report covers the runs that finished."))
    versions = mt.get("versions") if isinstance(mt.get("versions"), dict) else {}
    if versions:
        blocks += [_Heading(3, "Versions"), _Table(["package", "version"], [[k, str(v)] for k, v in sorted(versions.items())])]
    if machine:
        fmt = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731
        blocks += [_Heading(3, "Machine"), _Table(["item", "value"], [[k, fmt(v)] for k, v in sorted(machine.items())])]
    if config:
        blocks += [_Heading(3, "Configuration"), _Code(json.dumps(config, indent=2, sort_keys=True))]
    return blocks


def _count(n: int, noun: str) -> str:
    """'1 run', '5 runs'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def build_report(run_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``report.md``, ``report.html`` and ``figures/`` into ``run_dir``.

    Returns (md_path, html_path). Raises :class:`DataError` when
    ``run_dir/metrics.json`` is missing or corrupt; every other missing or
    unreadable file is skipped and listed in the report's "Checks" section.
    """
    folder = collect(run_dir)
    root = folder.root
    n_runs = sum(len(s) for s in folder.runs.values())
    blocks: list[Any] = [
        _Heading(1, "mnist-ssl report"),
        _Text(f"Run folder {root.name}: {_count(n_runs, 'run')} of {_count(len(folder.runs), 'method')}, "
              f"{_count(sum(len(s) for s in folder.baselines.values()), 'baseline result')}. "
              "Built from the folder's files only; accuracies in percent."
              + (f" Classes: {', '.join(folder.class_labels)}." if folder.named_classes else "")),
    ]
    blocks += _results_section(folder)
    blocks += _frozen_section(folder)
    blocks += _semi_section(folder)
    blocks += _paired_section(folder)
    blocks += _figures_section(folder)  # may add notes: keep before "Checks"
    blocks += _confusion_text_section(folder)
    blocks += _provenance_section(folder)
    blocks += [_Heading(2, "Checks")]
    if folder.notes:
        blocks.append(_Table(["problem (file skipped or value distrusted)"], [[n] for n in folder.notes]))
    else:
        blocks.append(_Text("metrics.json is valid against mnist-ssl/metrics/v1; every file was readable."))

    md_path, html_path = root / "report.md", root / "report.html"
    atomic_write_bytes(md_path, _md(blocks).encode("utf-8"))
    atomic_write_bytes(html_path, _html(blocks, root, f"mnist-ssl report: {root.name}").encode("utf-8"))
    return str(md_path), str(html_path)
