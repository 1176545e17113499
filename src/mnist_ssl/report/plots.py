"""Figures for runs and reports (matplotlib, Agg backend, PNG only).

Every function takes plain arrays or lists (never files), draws one figure and
writes it to ``path`` atomically: the PNG is saved to a temporary file in the
same folder and moved over ``path`` with ``os.replace``, so a reader never
sees half a figure and an interrupted run leaves the old one intact.

Figures are built on ``matplotlib.figure.Figure`` directly rather than through
``pyplot``: nothing is registered in pyplot's global list of open figures, so
nothing has to be closed and nothing leaks when a plot raises half way.

Images are arrays in [0, 1], greyscale (H, W) or colour (H, W, 3) (channel-first
(1|3, H, W) is accepted too); masked pixels may be NaN and are drawn in a colour
of their own.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: the toolkit runs on servers and in CI

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator  # noqa: E402

from mnist_ssl.fileio import atomic_write_bytes  # noqa: E402

__all__ = [
    "plot_loss_curves",
    "plot_loss_bands",
    "plot_confusion",
    "plot_confusion_grid",
    "plot_reconstruction",
    "plot_clip_reconstruction",
    "plot_views",
    "plot_misclassified",
    "plot_feature_maps",
    "plot_accuracy_vs_labels",
    "pca_2d",
]

DPI = 110
PHASE_ORDER = ("pretrain", "finetune")
MASK_COLOUR = (0.85, 0.35, 0.25)  # NaN pixels (masked patches) in reconstruction grids


# ----- saving ---------------------------------------------------------------
def _save(fig: Figure, path: str | os.PathLike) -> str:
    """Write ``fig`` as PNG to ``path`` atomically (see :mod:`mnist_ssl.fileio`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return math.ceil(n / cols), cols


def _panels(fig: Figure, n: int, max_cols: int = 4) -> list[Any]:
    """``n`` axes in a grid; unused cells of the last row are hidden."""
    rows, cols = _grid(n, max_cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


# ----- losses ---------------------------------------------------------------
def _series(records: Sequence[Any]) -> tuple[list[float], dict[str, list[float]]]:
    """Loss (and per-term losses) from log records or a plain list of numbers."""
    if records and not isinstance(records[0], Mapping):
        return [float(v) for v in records], {}
    loss = [float(r["loss"]) for r in records]
    terms: dict[str, list[float]] = {}
    names = sorted({k for r in records for k in (r.get("terms") or {})})
    # A single term equal to the loss adds nothing to the picture.
    for name in names:
        values = [float((r.get("terms") or {}).get(name, np.nan)) for r in records]
        if not np.allclose(values, loss, equal_nan=True):
            terms[name] = values
    return loss, terms


def _log_scale_if_positive(ax: Any, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
        # Plain numbers ("0.3", "1.1"), not "3x10^-1": losses often span less
        # than a decade, where matplotlib labels only minor ticks.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))


def plot_loss_curves(logs_by_phase: Mapping[str, Sequence[Any]], path: str, title: str = "") -> str:
    """Loss per epoch of one run, one panel per phase (pretrain, then finetune).

    logs_by_phase: phase -> the run's log.jsonl records of that phase (dicts
    with "loss" and optionally "terms"), or phase -> list of losses. Each panel
    shows the loss and each loss term; the y axis is logarithmic when every
    value is positive.
    """
    phases = [p for p in PHASE_ORDER if logs_by_phase.get(p)]
    phases += sorted(p for p in logs_by_phase if p not in PHASE_ORDER and logs_by_phase[p])
    fig = Figure(figsize=(4.5 * max(1, len(phases)), 3.4), layout="constrained")
    if not phases:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no epochs logged", ha="center", va="center")
        ax.set_axis_off()
    for ax, phase in zip(_panels(fig, len(phases), max_cols=len(phases) or 1), phases):
        loss, terms = _series(logs_by_phase[phase])
        epochs = np.arange(1, len(loss) + 1)
        ax.plot(epochs, loss, lw=2, label="loss")
        for name, values in terms.items():
            ax.plot(epochs, values, lw=1, ls="--", label=name)
        _log_scale_if_positive(ax, np.array(loss + [v for vs in terms.values() for v in vs]))
        ax.set_title(phase)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if terms:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _stack(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """(seeds, epochs) array; shorter curves are padded with NaN."""
    length = max(len(c) for c in curves)
    out = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        out[i, : len(c)] = c
    return out


def plot_loss_bands(
    curves: Mapping[str, Sequence[Sequence[float]]], path: str, phase: str, band: str = "minmax"
) -> str:
    """Mean loss per epoch over seeds with a band, one line per method.

    curves: method -> list over seeds of per-epoch losses (lengths may differ:
    missing epochs are ignored). band: "minmax" (min to max over seeds) or
    "std" (mean ± sample std).
    """
    if band not in ("minmax", "std"):
        raise ValueError(f"band={band!r}: choose 'minmax' or 'std'")
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    everything = []
    for method, seeds in curves.items():
        seeds = [s for s in seeds if len(s)]
        if not seeds:
            continue
        y = _stack(seeds)
        x = np.arange(1, y.shape[1] + 1)
        with warnings.catch_warnings():  # an epoch no seed reached is all-NaN: fine
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmean(y, axis=0)
            if band == "minmax":
                lo, hi = np.nanmin(y, axis=0), np.nanmax(y, axis=0)
            else:
                std = np.nanstd(y, axis=0, ddof=1) if y.shape[0] > 1 else np.zeros_like(mean)
                lo, hi = mean - np.nan_to_num(std), mean + np.nan_to_num(std)
        (line,) = ax.plot(x, mean, lw=1.8, label=f"{method} (n={len(seeds)})")
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        everything.append(y.ravel())
    if everything:
        _log_scale_if_positive(ax, np.concatenate(everything))
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.set_title(f"{phase} loss, mean and {'min-max' if band == 'minmax' else '± std'} over seeds")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ----- confusion ------------------------------------------------------------
def _draw_confusion(ax: Any, confusion: Any, classes: Sequence[Any], title: str) -> None:
    """Counts written in the cells; colour = fraction of the row (the recall scale)."""
    c = np.asarray(confusion, dtype=np.int64)
    rows = c.sum(axis=1, keepdims=True)
    frac = np.divide(c, rows, out=np.zeros(c.shape), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if frac[i, j] > 0.6 else "black")
    ticks = np.arange(c.shape[0])
    ax.set_xticks(ticks, [str(k) for k in classes])
    ax.set_yticks(ticks, [str(k) for k in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)


def plot_confusion(confusion: Any, classes: Sequence[Any], path: str, title: str = "") -> str:
    """One confusion matrix (C, C), rows = true class, columns = predicted."""
    n = len(classes)
    fig = Figure(figsize=(1.2 + 0.55 * n, 1.0 + 0.55 * n), layout="constrained")
    _draw_confusion(fig.subplots(), confusion, classes, title)
    return _save(fig, path)


def plot_confusion_grid(confusions: Mapping[str, Any], classes: Sequence[Any], path: str) -> str:
    """One panel per method: method -> (C, C) confusion (e.g. summed over seeds)."""
    n = max(1, len(confusions))
    rows, cols = _grid(n)
    side = 1.0 + 0.55 * len(classes)
    fig = Figure(figsize=(side * cols + 0.4, (side + 0.2) * rows), layout="constrained")
    for ax, (method, conf) in zip(_panels(fig, n), confusions.items()):
        c = np.asarray(conf)
        total = int(c.sum())
        acc = np.trace(c) / total if total else float("nan")
        _draw_confusion(ax, c, classes, f"{method}  {100 * acc:.2f}% of {total}")
    return _save(fig, path)


# ----- images and clips -----------------------------------------------------
def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _images(x: Any, name: str) -> np.ndarray:
    """(n, H, W) grey or (n, H, W, 3) colour float array from (n, H, W), (n, H, W, 3) or
    channel-first (n, 1|3, H, W) (numpy or torch)."""
    a = _as_array(x)
    if a.ndim == 4 and a.shape[-1] != 3 and a.shape[1] in (1, 3):
        a = a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 3)):
        raise ValueError(f"{name}: expected (n, H, W) or (n, H, W, 3) images, got shape {a.shape}")
    return a


def _clips(x: Any, name: str) -> np.ndarray:
    """(n, T, H, W) grey or (n, T, H, W, 3) colour from those, (n, 1, T, H, W), (n, T, 1, H, W)
    or channel-first colour (n, 3, T, H, W)."""
    a = _as_array(x)
    if a.ndim == 5 and a.shape[-1] != 3:
        if a.shape[1] == 1:
            a = a[:, 0]
        elif a.shape[2] == 1:
            a = a[:, :, 0]
        elif a.shape[1] == 3:
            a = a.transpose(0, 2, 3, 4, 1)
    if not (a.ndim == 4 or (a.ndim == 5 and a.shape[-1] == 3)):
        raise ValueError(f"{name}: expected (n, T, H, W) or (n, T, H, W, 3) clips, got shape {a.shape}")
    return a


def _grey() -> Any:
    return matplotlib.colormaps["gray"].with_extremes(bad=MASK_COLOUR)


def _show(ax: Any, image: np.ndarray) -> None:
    """Draw one (H, W) image in grey or one (H, W, 3) image in colour, values in [0, 1], NaN
    pixels (masked patches) in MASK_COLOUR."""
    if image.ndim == 2:
        ax.imshow(np.ma.masked_invalid(image), cmap=_grey(), vmin=0, vmax=1)
        return
    rgb = np.clip(image, 0, 1)  # a reconstruction may overshoot; imshow would warn and clip
    rgb[np.isnan(image).any(axis=-1)] = MASK_COLOUR
    ax.imshow(rgb)


def _image_grid(columns: Sequence[tuple[str, np.ndarray]], path: str) -> str:
    """Rows = examples; one column per (title, (n, H, W) or (n, H, W, 3) array)."""
    n = columns[0][1].shape[0]
    for title, a in columns:
        if a.shape[0] != n:
            raise ValueError(f"{title}: {a.shape[0]} examples, expected {n}")
    fig = Figure(figsize=(1.3 * len(columns), 1.3 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)
    for j, (title, a) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=9)
        for i in range(n):
            _show(axes[i, j], a[i])
            axes[i, j].set_axis_off()
    return _save(fig, path)


def plot_reconstruction(original: Any, masked: Any, reconstructed: Any, path: str) -> str:
    """Masked-autoencoder grid: rows = examples; columns original, masked, reconstructed.

    Each array (n, H, W) grey or (n, H, W, 3) colour (or channel-first (n, 1|3, H, W)) in
    [0, 1]; NaN pixels in ``masked`` mark hidden patches.
    """
    return _image_grid(
        [("original", _images(original, "original")), ("masked", _images(masked, "masked")),
         ("reconstructed", _images(reconstructed, "reconstructed"))],
        path,
    )


def plot_views(original: Any, view1: Any, view2: Any, path: str) -> str:
    """Contrastive views: rows = examples; columns original, view 1, view 2 ((n, H, W) grey or
    (n, H, W, 3) colour each)."""
    return _image_grid(
        [("original", _images(original, "original")), ("view 1", _images(view1, "view1")),
         ("view 2", _images(view2, "view2"))],
        path,
    )


def draw_method_figure(kind: str, arrays: Mapping[str, np.ndarray], path: str) -> str:
    """The figure a method's pretraining writes, from the arrays its objective's ``figure()``
    returns: ``kind`` is the registry's (``"reconstruction"``: original, masked, reconstruction,
    each (B, H, W) for images or (B, T, H, W) for clips; ``"views"``: original, view1, view2).
    Colour comes channel-last, as imshow takes it: (B, H, W, 3) images, (B, T, H, W, 3) clips
    (channel-first would make a colour image and a three-frame grey clip the same shape)."""
    if kind == "views":
        return plot_views(arrays["original"], arrays["view1"], arrays["view2"], path)
    if kind != "reconstruction":
        raise ValueError(f"unknown figure kind {kind!r}")
    masked = np.asarray(arrays["masked"])
    is_clip = masked.ndim == 5 or (masked.ndim == 4 and masked.shape[-1] != 3)
    draw = plot_clip_reconstruction if is_clip else plot_reconstruction
    return draw(arrays["original"], arrays["masked"], arrays["reconstruction"], path)


def plot_misclassified(
    errors_by_method: Mapping[str, tuple[str, Sequence[tuple[Any, str]]]], path: str, per_row: int = 12
) -> str:
    """The test images each method got wrong: one band per method, headed by its caption.

    errors_by_method: method -> (caption, [((H, W) or (H, W, 3) image in [0, 1], label), ...]); a band
    shows the first ``per_row`` images, each titled with its label (for example
    "s0: 2→1", seed 0, true 2, predicted 1), and a method with none is a caption alone.
    """
    if per_row < 1:
        raise ValueError(f"per_row={per_row} must be >= 1")
    n = max(1, len(errors_by_method))
    cols = max([per_row if len(e) > per_row else len(e) for _, e in errors_by_method.values()] + [1])
    fig = Figure(figsize=(max(4.0, 0.95 * cols), 1.45 * n + 0.2), layout="constrained")
    bands = fig.subfigures(n, 1, squeeze=False)[:, 0]
    for band, (method, (caption, errors)) in zip(bands, errors_by_method.items()):
        band.suptitle(f"{method}: {caption}", fontsize=9, x=0.01, ha="left")
        axes = band.subplots(1, cols, squeeze=False)[0]
        for j, ax in enumerate(axes):
            ax.set_axis_off()
            if j < min(per_row, len(errors)):
                image, label = errors[j]
                _show(ax, _images(np.asarray(image)[None], label)[0])
                ax.set_title(label, fontsize=8)
    return _save(fig, path)


def plot_clip_reconstruction(original: Any, masked: Any, recon: Any, path: str) -> str:
    """Video-MAE grid: for each example three rows (original, masked, reconstructed), T frames each.

    Each array (n, T, H, W) grey or (n, T, H, W, 3) colour in [0, 1] (a singleton channel axis,
    or channel-first colour (n, 3, T, H, W), is accepted).
    """
    rows = [("original", _clips(original, "original")), ("masked", _clips(masked, "masked")),
            ("reconstructed", _clips(recon, "recon"))]
    n, t = rows[0][1].shape[:2]
    for name, a in rows:
        if a.shape[:2] != (n, t):
            raise ValueError(f"{name}: shape {a.shape}, expected ({n}, {t}, H, W)")
    fig = Figure(figsize=(1.2 * t + 1.3, 1.2 * 3 * n + 0.3), layout="constrained")
    axes = fig.subplots(3 * n, t, squeeze=False)
    for i in range(n):
        for r, (name, a) in enumerate(rows):
            for f in range(t):
                ax = axes[3 * i + r, f]
                _show(ax, a[i, f])
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0 and r == 0:
                    ax.set_title(f"frame {f}", fontsize=9)
            axes[3 * i + r, 0].set_ylabel(f"{i}: {name}", fontsize=8)
    return _save(fig, path)


# ----- features -------------------------------------------------------------
def pca_2d(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) features on their first two principal axes (numpy SVD).

    Returns ((N, 2) coordinates, (2,) fraction of the variance each axis explains).
    A feature set with one dimension gets a zero second coordinate.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x.reshape(x.shape[0], -1) - x.reshape(x.shape[0], -1).mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    var = s**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(min(2, var.size))
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((coords.shape[0], 2 - coords.shape[1]))])
        ratio = np.append(ratio, np.zeros(2 - ratio.size))
    return coords, ratio


def _label_names(y: np.ndarray, classes: Sequence[Any] | None) -> dict[int, str]:
    """Legend text of each label value: the value itself when ``classes`` are numbers and
    it is one of them (labels stored as digits), else ``classes[value]`` (labels stored as
    indices into ``classes``, which may be names such as an image folder's)."""
    values = [int(v) for v in np.unique(y)]
    numbers = classes is not None and all(isinstance(c, (int, np.integer)) for c in classes)
    if classes is None or (numbers and set(values) <= {int(c) for c in classes}):
        return {v: str(v) for v in values}
    return {v: str(classes[v]) if 0 <= v < len(classes) else str(v) for v in values}


def plot_feature_maps(
    features_by_method: Mapping[str, tuple[Any, Any]],
    path: str,
    classes: Sequence[Any] | None = None,
    projection: str = "pca",
) -> str:
    """2-D map of frozen features, one panel per method, points coloured by class.

    features_by_method: method -> ((N, D) features, (N,) labels). classes: the legend's
    name of each label (see ``_label_names``).
    projection: "pca" (default: exact and instant) or "tsne" (sklearn, slower,
    shows clusters better but distances between clusters mean little).
    """
    if projection not in ("pca", "tsne"):
        raise ValueError(f"projection={projection!r}: choose 'pca' or 'tsne'")
    n = max(1, len(features_by_method))
    rows, cols = _grid(n, 3)
    fig = Figure(figsize=(3.6 * cols, 3.3 * rows + 0.3), layout="constrained")
    cmap = matplotlib.colormaps["tab10"]
    for ax, (method, (x, y)) in zip(_panels(fig, n, 3), features_by_method.items()):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y).astype(np.int64).ravel()
        if projection == "pca":
            coords, ratio = pca_2d(x)
            sub = f"PCA {100 * ratio[0]:.0f}% + {100 * ratio[1]:.0f}% of variance"
        else:
            from sklearn.manifold import TSNE

            perplexity = float(min(30, max(2, x.shape[0] // 4)))
            coords = TSNE(n_components=2, init="pca", random_state=0, perplexity=perplexity).fit_transform(x)
            sub = "t-SNE"
        names = _label_names(y, classes)
        for i, v in enumerate(sorted(names)):
            sel = y == v
            ax.scatter(coords[sel, 0], coords[sel, 1], s=8, alpha=0.7, color=cmap(i % 10), label=names[v])
        ax.set_title(f"{method}\n{sub}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return _save(fig, path)


def plot_accuracy_vs_labels(table: Mapping[str, Mapping[Any, tuple[float, float]]], path: str) -> str:
    """Label efficiency: accuracy against labelled images per class.

    table: method -> {labels per class k: (mean, std)} with accuracies as
    fractions in [0, 1] (plotted in percent). The x axis is logarithmic when
    k spans a factor of 10 or more.
    """
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ks_all: list[float] = []
    for method, points in table.items():
        ks = sorted(points, key=float)
        if not ks:
            continue
        mean = np.array([points[k][0] for k in ks]) * 100
        std = np.array([points[k][1] for k in ks]) * 100
        xs = np.array([float(k) for k in ks])
        if "raw pixels" in method:  # a reference, not a ViT: dashed, no markers
            ax.errorbar(xs, mean, yerr=std, linestyle="--", capsize=2, alpha=0.7, label=method)
        else:
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=method)
        ks_all.extend(xs)
    if ks_all and min(ks_all) > 0 and max(ks_all) / min(ks_all) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ks_all:
        ax.legend(fontsize=8)
    return _save(fig, path)
