"""How well does ``mnist-ssl predict`` read photos and scans? A paired measurement (docs/predict.md).

Held-out MNIST digits (not in the checkpoint's training sample) are rendered as
photo-like images under several conditions (lighting, noise, ink and paper
colours, offsets, sizes, JPEG); predict's top-class accuracy on each
condition is compared with the accuracy of the same digits as 28 x 28 images,
computed by the function ``mnist-ssl evaluate`` uses. Blank pages and noise
are rendered too: none may come out as a confident digit.

The development digits (the checkpoint run's own test sample, which
``mnist-ssl evaluate --checkpoint CKPT`` tests) choose predict's default
``--min-confidence``; the figures reported are on the other held-out digits.

    python scripts/render_photos.py --checkpoint CKPT --out DIR [--json OUT] [--limit N]

DIR receives the rendered images (DIR/<set>/<condition>/NNNN_<label>.<ext>).
``render_photo`` and ``render_junk`` are also used by tests/predict/.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# name -> how the photo is made. frame: (width, height); canvas: side of the rendered 28 x 28
# (the digit's box is 20/28 of it); paper, ink: RGB; light: (kind, strength); noise: sensor
# noise deviation on 0-1; blur: camera blur in pixels; save: (format, JPEG quality).
CONDITIONS: dict[str, dict] = {
    "scan_clean": dict(frame=(400, 300), canvas=196, paper=(250, 250, 248), ink=(20, 20, 25),
                       light=("none", 0.0), noise=0.005, blur=0.6, save=("PNG", None), grey=True),
    "phone_gradient": dict(frame=(400, 300), canvas=168, paper=(236, 232, 224), ink=(35, 35, 40),
                           light=("linear", 0.5), noise=0.02, blur=1.0, save=("JPEG", 85)),
    "vignette_noisy": dict(frame=(400, 300), canvas=150, paper=(230, 230, 230), ink=(40, 40, 40),
                           light=("radial", 0.45), noise=0.05, blur=1.0, save=("JPEG", 80)),
    "soft_shadow": dict(frame=(400, 300), canvas=168, paper=(240, 240, 236), ink=(30, 30, 30),
                        light=("shadow", 0.4), noise=0.02, blur=1.0, save=("JPEG", 85)),
    "blue_ink_cream": dict(frame=(400, 300), canvas=168, paper=(240, 228, 200), ink=(30, 50, 160),
                           light=("linear", 0.3), noise=0.02, blur=0.8, save=("JPEG", 90)),
    "red_ink_grey_paper": dict(frame=(400, 300), canvas=168, paper=(150, 150, 150), ink=(180, 30, 30),
                               light=("none", 0.0), noise=0.02, blur=0.8, save=("PNG", None)),
    "chalk_on_board": dict(frame=(400, 300), canvas=168, paper=(40, 70, 50), ink=(225, 225, 215),
                           light=("radial", 0.3), noise=0.03, blur=1.0, save=("JPEG", 85)),
    "small_offcentre": dict(frame=(640, 480), canvas=70, paper=(236, 232, 224), ink=(35, 35, 40),
                            light=("linear", 0.4), noise=0.02, blur=0.7, save=("JPEG", 85)),
    "large_frame": dict(frame=(1600, 1200), canvas=600, paper=(236, 232, 224), ink=(35, 35, 40),
                        light=("linear", 0.4), noise=0.02, blur=2.0, save=("JPEG", 90)),
}

# name -> a page with no digit. size: (width, height).
JUNK: dict[str, dict] = {
    "blank_white": dict(size=(400, 300), kind="blank", light=("none", 0.0), noise=0.0, save=("PNG", None)),
    "blank_lit_jpeg": dict(size=(400, 300), kind="blank", light=("linear", 0.5), noise=0.02, save=("JPEG", 85)),
    "blank_shadow_jpeg": dict(size=(400, 300), kind="blank", light=("shadow", 0.4), noise=0.03, save=("JPEG", 80)),
    "paper_texture": dict(size=(400, 300), kind="texture", light=("radial", 0.3), noise=0.02, save=("JPEG", 85)),
    "noise_uniform": dict(size=(400, 300), kind="uniform", light=("none", 0.0), noise=0.0, save=("PNG", None)),
    "noise_gaussian": dict(size=(400, 300), kind="gaussian", light=("none", 0.0), noise=0.0, save=("PNG", None)),
}


def _lighting(h: int, w: int, light: tuple[str, float], rng: np.random.Generator) -> np.ndarray:
    """(H, W) multiplicative illumination in (0, 1]."""
    kind, strength = light
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = ys / max(h - 1, 1), xs / max(w - 1, 1)
    if kind == "none":
        return np.ones((h, w), dtype=np.float32)
    if kind == "linear":
        a = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(a) * xs + np.sin(a) * ys
        ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
        return 1 - strength * ramp
    if kind == "radial":
        cy, cx = rng.uniform(0.3, 0.7, size=2)
        r2 = (ys - cy) ** 2 + (xs - cx) ** 2
        return 1 - strength * r2 / float(r2.max())
    if kind == "shadow":  # a soft-edged shadow (a hand or a phone) across part of the page
        a = rng.uniform(0, 2 * np.pi)
        d = np.cos(a) * (xs - 0.5) + np.sin(a) * (ys - 0.5) - rng.uniform(-0.3, 0.3)
        return 1 - strength / (1 + np.exp(-d / 0.08))
    raise ValueError(f"unknown lighting {kind!r}")


def _encode(img: np.ndarray, save: tuple[str, int | None], grey: bool = False) -> tuple[bytes, str]:
    arr = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr[..., 0] if grey else arr, mode="L" if grey else "RGB")
    buf = io.BytesIO()
    fmt, quality = save
    im.save(buf, format=fmt, **({"quality": quality} if quality else {}))
    return buf.getvalue(), ".jpg" if fmt == "JPEG" else ".png"


def render_photo(digit: np.ndarray, cond: dict, rng: np.random.Generator) -> tuple[bytes, str]:
    """A uint8 (28, 28) MNIST digit (light on black) -> (encoded file bytes, suffix), a photo of it on paper."""
    from scipy import ndimage

    w, h = cond["frame"]
    side = cond["canvas"]
    cover = np.asarray(Image.fromarray(np.asarray(digit, dtype=np.uint8)).resize((side, side), Image.Resampling.BICUBIC),
                       dtype=np.float32) / 255.0
    page = np.zeros((h, w), dtype=np.float32)
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    page[top:top + side, left:left + side] = np.clip(cover, 0, 1)
    if cond["blur"]:
        page = ndimage.gaussian_filter(page, cond["blur"])
    paper = np.asarray(cond["paper"], dtype=np.float32) / 255
    ink = np.asarray(cond["ink"], dtype=np.float32) / 255
    img = paper * (1 - page[..., None]) + ink * page[..., None]
    img = img * _lighting(h, w, cond["light"], rng)[..., None]
    if cond["noise"]:
        img = img + rng.normal(0, cond["noise"], img.shape).astype(np.float32)
    return _encode(img, cond["save"], cond.get("grey", False))


def render_junk(spec: dict, rng: np.random.Generator) -> tuple[bytes, str]:
    """A page with no digit: blank (lit or not), paper texture, or pure noise -> (file bytes, suffix)."""
    from scipy import ndimage

    w, h = spec["size"]
    kind = spec["kind"]
    if kind == "uniform":
        img = rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
    elif kind == "gaussian":
        img = np.repeat(rng.normal(0.5, 0.15, (h, w, 1)), 3, axis=2).astype(np.float32)
    else:
        paper = np.full((h, w, 3), 0.93, dtype=np.float32)
        if kind == "texture":
            paper += ndimage.gaussian_filter(rng.normal(0, 0.2, (h, w)), 3).astype(np.float32)[..., None]
        img = paper * _lighting(h, w, spec["light"], rng)[..., None]
    if spec["noise"]:
        img = img + rng.normal(0, spec["noise"], img.shape).astype(np.float32)
    return _encode(img, spec["save"])


# ----- the measurement -----------------------------------------------------------------
def _held_out(checkpoint: str):
    """(dev, report) Splits: the run's test sample, and the other digits its training sample did not use."""
    from mnist_ssl.config import DataConfig
    from mnist_ssl.data import load_test_split
    from mnist_ssl.engine.checkpoint import load_classifier

    _, meta = load_classifier(checkpoint)
    run = meta.get("run_config") or {}
    data = DataConfig(**{k: v for k, v in run.get("data", {}).items() if k in DataConfig.__dataclass_fields__})
    seed = int(run.get("seed", 0))
    dev = load_test_split(data, seed)
    held = load_test_split(data, seed, all_test=True)
    dev_keys = {hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in dev.images}
    rest = [i for i, im in enumerate(held.images) if hashlib.sha1(im.numpy().tobytes()).hexdigest() not in dev_keys]
    return dev, held.subset(rest), seed, data


def _per_class(split, n: int):
    """The first ``n`` digits of each class, in the split's order."""
    labels = split.labels.numpy()
    keep = [i for i in range(len(labels)) if (labels[:i] == labels[i]).sum() < n]
    return split.subset(keep)


def _mnist_correct(checkpoint: str, split) -> np.ndarray:
    """Per digit: is the 28 x 28 image classified correctly? (evaluate's forward pass, experiment.stages.predict_logits)"""
    from mnist_ssl.data import class_index
    from mnist_ssl.engine.checkpoint import load_classifier
    from mnist_ssl.experiment.stages import predict_logits

    model, meta = load_classifier(checkpoint)
    classes = list(meta.get("classes") or range(model.cfg.num_classes))
    logits = predict_logits(model, split.images)
    return (logits.argmax(1) == class_index(split.labels, classes)).numpy()


def _fresh(folder: Path) -> Path:
    """``folder``, emptied of the images an earlier run rendered there (predict reads the whole folder)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _render_set(split, name: str, cond: dict, folder: Path, seed: int) -> list[tuple[Path, int]]:
    _fresh(folder)
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    out = []
    for i, (img, label) in enumerate(zip(split.images[:, 0].numpy(), split.labels.tolist())):
        data, suffix = render_photo(img, cond, rng)
        path = folder / f"{i:04d}_{label}{suffix}"
        path.write_bytes(data)
        out.append((path, int(label)))
    return out


def _predict(checkpoint: str, files: list[tuple[Path, int]], folder: Path) -> list[dict]:
    """predict on the folder (as ``mnist-ssl predict FOLDER`` does), with --min-confidence 0."""
    from mnist_ssl.predict import predict_paths

    labels = {str(p): y for p, y in files}
    rows = []
    for r in predict_paths(checkpoint, [folder], min_confidence=0.0):
        rows.append({"label": labels[r.file], "status": r.status, "class": r.label,
                     "probability": r.probability, "reason": r.reason})
    return rows


def _summary(rows: list[dict], mnist_ok: np.ndarray, threshold: float) -> dict:
    n = len(rows)
    top_ok = np.array([r["class"] == r["label"] for r in rows])
    no_digit = np.array([r["class"] is None for r in rows])
    confident = np.array([r["probability"] is not None and r["probability"] >= threshold for r in rows])
    return {
        "n": n,
        "evaluate_accuracy": round(100 * float(mnist_ok.mean()), 2),
        "predict_accuracy": round(100 * float(top_ok.mean()), 2),
        "difference": round(100 * float(top_ok.mean() - mnist_ok.mean()), 2),
        "both_right": int((top_ok & mnist_ok).sum()), "only_evaluate_right": int((~top_ok & mnist_ok).sum()),
        "only_predict_right": int((top_ok & ~mnist_ok).sum()),
        "no_digit_found": int(no_digit.sum()),
        "uncertain_percent": round(100 * float(1 - confident.mean()), 2),
        "confident_accuracy": round(100 * float(top_ok[confident].mean()), 2) if confident.any() else None,
        "confident_wrong": int((confident & ~top_ok).sum()),
    }


def choose_min_confidence(correct_probabilities: list[float], keep: float = 0.99) -> float:
    """The highest of 0.50, 0.55, ..., 0.95 that keeps ``keep`` of the correctly classified digits confident."""
    p = np.asarray(correct_probabilities)
    best = 0.5
    for t in np.arange(0.5, 0.951, 0.05):
        if (p >= t).mean() >= keep:
            best = round(float(t), 2)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True, help="folder for the rendered images")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--limit", type=int, default=None, help="at most N digits per class and set (a quick run)")
    ap.add_argument("--junk", type=int, default=25, help="pages of each junk kind per set (default 25)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    args = ap.parse_args(argv)
    from mnist_ssl.fileio import atomic_write_text
    from mnist_ssl.predict import predict_paths

    started = time.time()
    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONDITIONS]
    if unknown:
        print(f"render_photos.py: unknown condition(s) {unknown}; known: {list(CONDITIONS)}", file=sys.stderr)
        return 2
    dev, report, seed, data = _held_out(args.checkpoint)
    if args.limit:
        dev, report = _per_class(dev, args.limit), _per_class(report, args.limit)
    out = Path(args.out)
    sets = {"dev": dev, "report": report}
    mnist_ok = {k: _mnist_correct(args.checkpoint, s) for k, s in sets.items()}
    rows: dict[str, dict[str, list[dict]]] = {k: {} for k in sets}
    for k, split in sets.items():
        for name in names:
            folder = out / k / name
            files = _render_set(split, name, CONDITIONS[name], folder, seed + (0 if k == "dev" else 1000))
            rows[k][name] = _predict(args.checkpoint, files, folder)
            print(f"{k} {name}: {_summary(rows[k][name], mnist_ok[k], 0.0)}", flush=True)
    threshold = choose_min_confidence([r["probability"] for c in rows["dev"].values() for r in c
                                       if r["class"] == r["label"]])
    junk = {}
    for k in sets:
        junk[k] = {}
        for name, spec in JUNK.items():
            folder = _fresh(out / k / "junk" / name)
            rng = np.random.default_rng([seed + (0 if k == "dev" else 1000), 7, sum(map(ord, name))])
            for i in range(args.junk):
                data_bytes, suffix = render_junk(spec, rng)
                (folder / f"{i:04d}{suffix}").write_bytes(data_bytes)
            results = list(predict_paths(args.checkpoint, [folder], min_confidence=threshold))
            junk[k][name] = {"n": len(results),
                             "confident_digit": sum(r.status == "ok" for r in results),
                             "uncertain_no_digit": sum(r.status == "uncertain" and r.label is None for r in results),
                             "uncertain_low_confidence": sum(r.status == "uncertain" and r.label is not None
                                                             for r in results),
                             "error": sum(r.status == "error" for r in results),
                             "max_probability": max([r.probability for r in results if r.probability is not None],
                                                    default=None)}
            print(f"{k} junk {name}: {junk[k][name]}", flush=True)
    result = {
        "checkpoint": str(args.checkpoint), "seed": seed, "classes": data.classes,
        "dev_digits": len(dev), "report_digits": len(report), "min_confidence_chosen_on_dev": threshold,
        "conditions": {n: {k: v for k, v in CONDITIONS[n].items()} for n in names},
        "dev": {n: _summary(rows["dev"][n], mnist_ok["dev"], threshold) for n in names},
        "report": {n: _summary(rows["report"][n], mnist_ok["report"], threshold) for n in names},
        "junk": junk,
        "wall_seconds": round(time.time() - started, 1),
        "command": "python scripts/render_photos.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(json.dumps({"min_confidence": threshold, "report": result["report"]}, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
