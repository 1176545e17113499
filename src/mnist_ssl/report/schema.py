"""The schema of a run folder's ``metrics.json`` (docs/metrics_schema.md).

:data:`METRICS_SCHEMA` is a JSON Schema (draft 2020-12) for tools that have a
validator; :func:`validate_metrics` checks the same rules by hand, so the
package needs no ``jsonschema`` at run time, plus the consistency rules a JSON
Schema cannot say (the confusion matrix sums to ``n_test``, its trace gives the
accuracy, the interval contains it, no (method, seed) appears twice).

Problems are returned as strings that name the place, e.g.
``runs[2].ci95: expected [lo, hi] with 0 <= lo <= hi <= 1``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "SCHEMA_ID",
    "METRICS_SCHEMA",
    "RUN_METRICS_SCHEMA",
    "BASELINE_METRICS_SCHEMA",
    "validate_metrics",
    "validate_run_metrics",
    "validate_baseline_metrics",
]

SCHEMA_ID = "mnist-ssl/metrics/v1"

_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_INTERVAL = {"type": "array", "items": _FRACTION, "minItems": 2, "maxItems": 2}
_CONFUSION = {"type": "array", "minItems": 1, "items": {"type": "array", "items": _COUNT}}
_CLASSES = {"type": "array", "minItems": 2, "items": {"type": "integer"}}
# The name of each of "classes" (an image folder's subfolders); absent for MNIST's digits.
_CLASS_NAMES = {"type": "array", "minItems": 2, "items": {"type": "string"}}
_RECALL = {"type": "array", "items": {"oneOf": [_FRACTION, {"type": "null"}]}}

RUN_METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["method", "seed", "classes", "accuracy", "n_test", "ci95", "confusion", "recall", "wall_time_s"],
    "properties": {
        "method": {"type": "string", "minLength": 1},
        "seed": _COUNT,
        "classes": _CLASSES,
        "class_names": _CLASS_NAMES,
        "accuracy": _FRACTION,
        "n_test": {"type": "integer", "minimum": 1},
        "ci95": _INTERVAL,
        "confusion": _CONFUSION,
        "recall": _RECALL,
        "linear_probe": {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "required": ["accuracy"], "properties": {"accuracy": _FRACTION}},
            ]
        },
        "knn": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["accuracy", "k"],
                    "properties": {"accuracy": _FRACTION, "k": {"type": "integer", "minimum": 1}},
                },
            ]
        },
        "tta": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["accuracy", "views"],
                    "properties": {"accuracy": _FRACTION, "views": {"type": "integer", "minimum": 1}},
                },
            ]
        },
        "checkpoint": {"type": ["string", "null"]},
        "wall_time_s": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
    },
}

BASELINE_METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["method", "seed", "accuracy", "n_test", "confusion", "wall_time_s"],
    "properties": {
        "method": {"type": "string", "minLength": 1},
        "seed": _COUNT,
        "classes": _CLASSES,
        "class_names": _CLASS_NAMES,
        "accuracy": _FRACTION,
        "n_test": {"type": "integer", "minimum": 1},
        "ci95": _INTERVAL,
        "confusion": _CONFUSION,
        "recall": _RECALL,
        "wall_time_s": {"type": "number", "minimum": 0},
    },
}

METRICS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "mnist-ssl run folder metrics.json",
    "type": "object",
    "required": ["schema", "command", "created", "versions", "machine", "config", "runs", "baselines"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "command": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
        "created": {"type": "string", "minLength": 1},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "machine": {"type": "object"},
        "config": {"type": "object"},
        "runs": {"type": "array", "items": RUN_METRICS_SCHEMA},
        "baselines": {"type": "array", "items": BASELINE_METRICS_SCHEMA},
    },
}


# ----- hand-written validation ---------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _is_fraction(v: Any) -> bool:
    return _is_num(v) and 0 <= v <= 1


def _check_classification(obj: dict, where: str, problems: list[str], need_classes: bool) -> None:
    """Fields shared by runs and baselines, and their mutual consistency."""
    if not (isinstance(obj.get("method"), str) and obj["method"]):
        problems.append(f"{where}.method: expected a non-empty string")
    if not (_is_int(obj.get("seed")) and obj["seed"] >= 0):
        problems.append(f"{where}.seed: expected an integer >= 0")
    acc, n = obj.get("accuracy"), obj.get("n_test")
    if not _is_fraction(acc):
        problems.append(f"{where}.accuracy: expected a number in [0, 1] (a fraction, not percent)")
        acc = None
    if not (_is_int(n) and n >= 1):
        problems.append(f"{where}.n_test: expected an integer >= 1")
        n = None

    classes = obj.get("classes")
    if "classes" in obj or need_classes:
        if not (isinstance(classes, list) and len(classes) >= 2 and all(_is_int(c) for c in classes)):
            problems.append(f"{where}.classes: expected a list of at least two integers")
            classes = None
    size = len(classes) if isinstance(classes, list) else None
    if "class_names" in obj:
        names = obj["class_names"]
        if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(c, str) for c in names)):
            problems.append(f"{where}.class_names: expected a list of at least two strings")
        elif size is not None and len(names) != size:
            problems.append(f"{where}.class_names: {len(names)} names but {size} classes")

    conf = obj.get("confusion")
    conf_ok = (
        isinstance(conf, list)
        and len(conf) >= 1
        and all(isinstance(r, list) and len(r) == len(conf) for r in conf)
        and all(_is_int(v) and v >= 0 for r in conf for v in r)
    )
    if not conf_ok:
        problems.append(f"{where}.confusion: expected a square list of lists of counts >= 0")
    else:
        if size is not None and len(conf) != size:
            problems.append(f"{where}.confusion: {len(conf)}x{len(conf)} but {size} classes")
        total, correct = sum(map(sum, conf)), sum(conf[i][i] for i in range(len(conf)))
        if n is not None and total != n:
            problems.append(f"{where}.confusion: sums to {total}, n_test is {n}")
        if acc is not None and total and abs(correct / total - acc) > 1e-6:
            problems.append(f"{where}.accuracy: {acc} but the confusion's trace gives {correct / total:.6f}")

    if "ci95" in obj or need_classes:
        ci = obj.get("ci95")
        if not (isinstance(ci, list) and len(ci) == 2 and all(_is_fraction(v) for v in ci) and ci[0] <= ci[1]):
            problems.append(f"{where}.ci95: expected [lo, hi] with 0 <= lo <= hi <= 1")
        elif acc is not None and not ci[0] - 1e-9 <= acc <= ci[1] + 1e-9:
            problems.append(f"{where}.ci95: {ci} does not contain the accuracy {acc}")

    if "recall" in obj or need_classes:
        rec = obj.get("recall")
        if not (isinstance(rec, list) and all(r is None or _is_fraction(r) for r in rec)):
            problems.append(f"{where}.recall: expected a list of numbers in [0, 1] or null")
        elif size is not None and len(rec) != size:
            problems.append(f"{where}.recall: {len(rec)} entries but {size} classes")


def validate_run_metrics(obj: Any, where: str = "run") -> list[str]:
    """Problems with one RunMetrics object (``runs/<method>/seed<k>/metrics.json``)."""
    if not isinstance(obj, dict):
        return [f"{where}: expected an object, got {type(obj).__name__}"]
    problems: list[str] = []
    _check_classification(obj, where, problems, need_classes=True)
    for key in ("linear_probe", "knn"):
        v = obj.get(key)
        if v is None:
            continue
        if not (isinstance(v, dict) and _is_fraction(v.get("accuracy"))):
            problems.append(f"{where}.{key}: expected null or an object with an accuracy in [0, 1]")
        elif key == "knn" and not (_is_int(v.get("k")) and v["k"] >= 1):
            problems.append(f"{where}.knn.k: expected an integer >= 1")
    tta = obj.get("tta")
    if tta is not None and not (isinstance(tta, dict) and _is_fraction(tta.get("accuracy"))
                                and _is_int(tta.get("views")) and tta["views"] >= 1):
        problems.append(f"{where}.tta: expected null or an object with an accuracy in [0, 1] and views >= 1")
    if obj.get("checkpoint") is not None and not isinstance(obj["checkpoint"], str):
        problems.append(f"{where}.checkpoint: expected a path string or null")
    wt = obj.get("wall_time_s")
    if not (isinstance(wt, dict) and all(_is_num(v) and v >= 0 for v in wt.values())):
        problems.append(f"{where}.wall_time_s: expected an object of seconds >= 0 (pretrain, finetune, eval, total)")
    return problems


def validate_baseline_metrics(obj: Any, where: str = "baseline") -> list[str]:
    """Problems with one baseline result (an entry of ``baselines/seed<k>.json``)."""
    if not isinstance(obj, dict):
        return [f"{where}: expected an object, got {type(obj).__name__}"]
    problems: list[str] = []
    _check_classification(obj, where, problems, need_classes=False)
    if not (_is_num(obj.get("wall_time_s")) and obj["wall_time_s"] >= 0):
        problems.append(f"{where}.wall_time_s: expected a number of seconds >= 0")
    return problems


def validate_metrics(obj: Any) -> list[str]:
    """Every problem with a parsed ``metrics.json``; an empty list means valid."""
    if not isinstance(obj, dict):
        return [f"metrics.json: expected a JSON object, got {type(obj).__name__}"]
    problems: list[str] = []
    missing = [k for k in METRICS_SCHEMA["required"] if k not in obj]
    if missing:
        problems.append(f"missing key(s): {', '.join(missing)}")
    if "schema" in obj and obj["schema"] != SCHEMA_ID:
        problems.append(f"schema: {obj['schema']!r}, expected {SCHEMA_ID!r}")
    cmd = obj.get("command")
    if "command" in obj and not (
        isinstance(cmd, str) or (isinstance(cmd, list) and all(isinstance(c, str) for c in cmd))
    ):
        problems.append("command: expected a string or a list of strings")
    if "created" in obj and not (isinstance(obj["created"], str) and obj["created"]):
        problems.append("created: expected a non-empty date string (ISO 8601)")
    if "versions" in obj and not (
        isinstance(obj["versions"], dict) and all(isinstance(v, str) for v in obj["versions"].values())
    ):
        problems.append("versions: expected an object of version strings")
    for key in ("machine", "config"):
        if key in obj and not isinstance(obj[key], dict):
            problems.append(f"{key}: expected an object")
    for key, check in (("runs", validate_run_metrics), ("baselines", validate_baseline_metrics)):
        if key not in obj:
            continue
        entries = obj[key]
        if not isinstance(entries, list):
            problems.append(f"{key}: expected an array")
            continue
        seen: set[tuple[Any, Any]] = set()
        for i, entry in enumerate(entries):
            problems.extend(check(entry, f"{key}[{i}]"))
            if isinstance(entry, dict):
                ident = (entry.get("method"), entry.get("seed"))
                if ident in seen:
                    problems.append(f"{key}[{i}]: method {ident[0]!r} seed {ident[1]!r} appears twice")
                seen.add(ident)
    return problems
