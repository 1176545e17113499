"""Peak memory of ``mnist-ssl predict`` on large images (docs/predict.md, "Safe decoding").

Each file is given to ``mnist-ssl predict`` in its own process; the process's
peak resident memory (``ru_maxrss`` from ``wait4``) is recorded, beside that
of the same command on a small image (the interpreter, torch and the model).

    python scripts/predict_memory.py --checkpoint CKPT --json OUT SMALL_IMAGE LARGE_IMAGE...
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--json", default=None)
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
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
