"""Peak memory of ``mnist-ssl predict`` on large images (docs/predict.md, "Safe decoding").

Each file is given to ``mnist-ssl predict`` in its own process; the process's
peak resident memory (``ru_maxrss`` from ``wait4``) is recorded, beside that
of the same command on a small image (the interpreter, torch and the model).

    python scripts/predict_memory.py --make-noise DIR
    python scripts/predict_memory.py --checkpoint CKPT --json OUT SMALL_IMAGE LARGE_IMAGE...

``--make-noise DIR`` writes the large images measured in docs/predict.md: random
noise, 7000 x 7000 as grey PNG, RGB PNG and RGB JPEG, and 8000 x 8000 grey PNG
(above the default --max-pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _measure_one(checkpoint: str, image: str) -> dict:
    pid = os.fork()
    if pid == 0:  # the child becomes the command; wait4 gives its own peak, not a maximum over children
        os.execv(sys.executable, [sys.executable, "-m", "mnist_ssl", "predict", "--checkpoint", checkpoint, image])
    _, status, usage = os.wait4(pid, 0)
    return {"image": image, "bytes": Path(image).stat().st_size, "exit_code": os.waitstatus_to_exitcode(status),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def make_noise(folder: Path) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7000, 7000), dtype=np.uint8)
    Image.fromarray(a).save(folder / "noise_7000_L.png", compress_level=1)
    rgb = Image.fromarray(np.stack([a, a[::-1], a[:, ::-1]], 2))
    rgb.save(folder / "noise_7000_rgb.png", compress_level=1)
    rgb.save(folder / "noise_7000_rgb.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (8000, 8000), dtype=np.uint8)).save(folder / "noise_8000_L.png",
                                                                             compress_level=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make-noise", default=None, metavar="DIR")
    ap.add_argument("--checkpoint")
    ap.add_argument("--json", default=None)
    ap.add_argument("images", nargs="*")
    args = ap.parse_args(argv)
    if args.make_noise:
        make_noise(Path(args.make_noise))
        return 0
    if not args.checkpoint or not args.images:
        ap.error("--checkpoint and at least one image are needed (or --make-noise DIR)")
    from PIL import Image

    rows = []
    for image in args.images:
        with Image.open(image) as im:
            size = im.size
        row = {**_measure_one(args.checkpoint, image), "pixels": size[0] * size[1], "size": list(size)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        from mnist_ssl.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps({"command": "python scripts/predict_memory.py " + " ".join(
            sys.argv[1:] if argv is None else argv), "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
