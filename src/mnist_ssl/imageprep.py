"""A photo or scan of a handwritten digit -> a 28 x 28 MNIST-style image (docs/predict.md).

The stages, one function each:

1. :func:`decode_image`: the pixel count is checked from the file's header
   before any pixel is decoded (PIL's decompression-bomb guard is set to the
   same limit and its warning and error become a :class:`DataError`); the EXIF
   orientation is applied; a large frame is reduced while decoding (JPEG) and
   right after, to at most ``WORK_SIDE`` pixels a side, so that every later
   stage works on a bounded array. Transparent pixels take the background's
   colour.
2. :func:`ink_map`: the paper and its lighting are a smooth surface, fitted per
   colour channel to block medians with a robust (outlier-trimmed) polynomial;
   what differs from it, projected on the ink's own colour, is the ink. So dark
   ink on light paper, light chalk on a board, blue or red ink, grey or tinted
   paper and uneven lighting all give a map that is about 0 on the paper and
   positive on the strokes.
3. :func:`find_digit`: a threshold (Otsu's, never below 4 noise deviations),
   connected components, and the main component with the strokes near it; a
   page with no stroke that stands out of the noise is :class:`NoDigit`.
4. :func:`frame_mnist`: MNIST's framing: the digit's longer side scaled to 20
   pixels, placed in 28 x 28 with its centre of mass at pixel (14, 14).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_ssl.errors import DataError

BOX = 20  # the digit's longer side, in pixels (MNIST)
SIZE = 28
CENTRE = 14.0  # row and column of the centre of mass, 0-based
SATURATED = 0.45  # fraction of MNIST's ink pixels (above 0.1) at 0.95 or more (embedded 5,000)
DEFAULT_MAX_PIXELS = 50_000_000  # 50 megapixels: phone photos up to 48 MP
WORK_SIDE = 1024  # longer side of the working array; larger frames are reduced to it
MIN_SIDE = 112  # smaller images are enlarged so that one pixel stroke is not below the smoothing scale
BLOCKS = 64  # the background is fitted to at most BLOCKS x BLOCKS block medians
BACKGROUND_DEGREE = 3  # polynomial degree of the paper-and-lighting surface
NOISE_SIGMAS = 4.0  # the threshold is never below this many noise deviations
MIN_CONTRAST = 0.06  # ink that differs from the paper by less (on 0-1) is not a stroke
MIN_SNR = 8.0  # nor ink whose level is below this many noise deviations
NEAR = 0.5  # a component this close to the main one (times its longer side) belongs to the digit
NEAR_MASS = 0.05  # ... if it has at least this fraction of the main one's ink
MAIN_SHARE = 0.5  # the digit must hold at least this share of all the ink above the threshold
MAX_COVER = 0.5  # ink covering more of the frame than this is not a digit
FRAME_EDGE = 0.5  # ink along the frame's edge for this fraction of its extent is an edge, not a digit
MIN_EXTENT = 8  # the digit's longer side in working pixels, at least

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")


class NoDigit(DataError):
    """The image was read but holds no digit-like stroke (blank page, noise, texture)."""


@dataclass
class InkMap:
    """ink: float32 (H, W), about 0 on the paper and positive on the strokes; noise: its deviation on the paper."""

    ink: np.ndarray
    noise: float


# ----- 1. decoding ---------------------------------------------------------------------
def decode_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file -> float32 (H, W, 3) RGB in [0, 1], at most ``WORK_SIDE`` pixels a side.

    Raises :class:`DataError` (one line, naming the file) for a missing file,
    one that is not an image, a truncated or corrupt one, and one of more than
    ``max_pixels`` pixels (refused from its header, before decoding).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and refuses above twice that, both in Image.open,
            # from the header: with the limit set to ours both mean "too many pixels".
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise DataError(_too_many(path, w, h, max_pixels))
                if w < 1 or h < 1:
                    raise DataError(f"{path}: the image has no pixels ({w} x {h})")
                return _to_rgb(im)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: refused before decoding: {e} (raise --max-pixels to allow it)") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode it (lower --max-pixels)") from None
    except Exception as e:  # any file content: one line, never a traceback
        raise DataError(f"{path}: not an image that can be read ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _too_many(path: Path, w: int, h: int, limit: int) -> str:
    return (f"{path}: {w} x {h} = {w * h:,} pixels, above the limit of {limit:,} (--max-pixels); "
            "not decoded")


def _to_rgb(im) -> np.ndarray:
    from PIL import Image, ImageOps

    side = max(im.size)
    if side > WORK_SIDE:
        im.draft("RGB", (WORK_SIDE, WORK_SIDE))  # JPEG: decode at 1/2 .. 1/8 scale; others: no-op
    im.load()
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block: keep the stored orientation
        pass
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        im = Image.fromarray(np.clip((a - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8))
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if im.mode not in ("L", "RGB", "RGBA", "LA"):  # palette, bilevel, CMYK, ...: resampled as colour
        im = im.convert("RGBA" if has_alpha else "RGB")
    # Resampled in the file's own mode, then converted: a full-size frame is held once, not twice.
    if max(im.size) > WORK_SIDE:
        im.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    elif min(im.size) < MIN_SIDE:
        scale = min(MIN_SIDE / min(im.size), WORK_SIDE / max(im.size))
        if scale > 1:
            im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                           Image.Resampling.BICUBIC)
    a = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    if not has_alpha:
        return a
    rgb, alpha = a[..., :3], a[..., 3:]
    opaque = _border(alpha[..., 0]) > 0.5
    if opaque.any():
        back = np.median(_border(rgb)[opaque], axis=0)
    else:
        # Drawn on nothing: the background is whichever of white and black the strokes are not.
        solid = alpha[..., 0] > 0.5
        lum = float(rgb[solid].mean()) if solid.any() else 0.0
        back = np.full(3, 1.0 if lum < 0.5 else 0.0, dtype=np.float32)
    return (rgb * alpha + back * (1 - alpha)).astype(np.float32)


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


# ----- 2. background removal -------------------------------------------------------------
def _mad_sigma(x: np.ndarray, samples: int = 40_000) -> float:
    """A robust deviation (1.4826 x median absolute deviation), from at most ``samples`` evenly spread values."""
    x = np.asarray(x, dtype=np.float32).ravel()
    x = x[:: max(1, x.size // samples)]
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _block_medians(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gh, gw, C) medians of square blocks (at most BLOCKS a side), and the blocks' centres (rows, cols) in [-1, 1]."""
    h, w, c = img.shape
    b = max(1, int(np.ceil(max(h, w) / BLOCKS)))
    gh, gw = max(1, h // b), max(1, w // b)
    blocks = img[:gh * b, :gw * b].reshape(gh, b, gw, b, c).transpose(0, 2, 4, 1, 3).reshape(gh, gw, c, b * b)
    med = np.median(blocks, axis=3)
    ys = ((np.arange(gh) + 0.5) * b - 0.5) / max(h - 1, 1) * 2 - 1
    xs = ((np.arange(gw) + 0.5) * b - 0.5) / max(w - 1, 1) * 2 - 1
    return med, ys, xs


def fit_background(img: np.ndarray, degree: int = BACKGROUND_DEGREE, rounds: int = 6) -> np.ndarray:
    """The paper and its lighting: float32 (H, W, C), a smooth surface through ``img`` (H, W, C).

    A polynomial in (row, col) per channel, fitted by least squares to block
    medians; blocks whose residual is more than 3 deviations away (the ink) are
    left out and the fit repeated, starting from a constant (the median).
    """
    h, w, c = img.shape
    med, ys, xs = _block_medians(img)
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    design = np.stack([(gy ** i * gx ** j).ravel() for i, j in terms], axis=1)
    values = med.reshape(-1, c).astype(np.float64)
    coef = np.zeros((len(terms), c))
    coef[0] = np.median(values, axis=0)
    fit = design @ coef
    for _ in range(rounds):
        resid = np.linalg.norm(values - fit, axis=1)
        keep = resid <= np.median(resid) + 3 * max(_mad_sigma(resid), 1.0 / 255)
        if keep.sum() < len(terms) * 3:
            break
        a = design[keep]
        # Normal equations (10 x 10): lstsq's SVD costs far more and gains nothing at this size.
        coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(len(terms)), a.T @ values[keep])
        fit = design @ coef
    # Evaluated as Vy @ M @ Vx^T per channel (Vandermonde matrices of rows and columns).
    vy = np.stack([np.linspace(-1, 1, h) ** i if h > 1 else np.full(1, float(i == 0)) for i in range(degree + 1)], 1)
    vx = np.stack([np.linspace(-1, 1, w) ** j if w > 1 else np.full(1, float(j == 0)) for j in range(degree + 1)], 1)
    out = np.zeros((h, w, c), dtype=np.float32)
    for ch in range(c):
        m = np.zeros((degree + 1, degree + 1))
        for k, (i, j) in enumerate(terms):
            m[i, j] = coef[k, ch]
        rows = (vy @ m).astype(np.float32)  # (H, degree + 1)
        for j in range(degree + 1):  # broadcasting, not a BLAS call: no thread pool for an outer product
            out[..., ch] += rows[:, j:j + 1] * vx[:, j].astype(np.float32)
    return out


def _ink_direction(resid: np.ndarray) -> np.ndarray | None:
    """The ink's colour minus the paper's, as a unit vector: the mean residual of the pixels that differ most."""
    strength = np.linalg.norm(resid, axis=2)
    cut = _median(strength) + 6 * max(_mad_sigma(strength), 1.0 / 255)
    strong = strength > cut
    if strong.sum() < 3:
        return None
    direction = resid[strong].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    return direction / norm if norm > 1e-6 else None


def _stroke_width(ink: np.ndarray) -> float | None:
    """About how wide the strokes are, in pixels: 2 x area / perimeter of the thresholded ink."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(ink, sigma=1.0)
    noise = max(_mad_sigma(smooth), 0.5 / 255)
    mask = smooth > max(otsu_threshold(smooth), _median(smooth) + NOISE_SIGMAS * noise)
    area = int(mask.sum())
    if area == 0:
        return None
    edge = mask & ~ndimage.binary_erosion(mask)
    return 2.0 * area / max(int(edge.sum()), 1)


def ink_map(rgb: np.ndarray) -> InkMap:
    """float32 (H, W, 3) RGB in [0, 1] -> the ink: 0 on the paper, positive on the strokes.

    The residual from :func:`fit_background` is projected on the ink's colour
    (the mean residual of the pixels that differ most from the paper), so that
    the ink's hue need not be known. Its polarity (dark ink or light chalk) is
    the side with the heavier tail of thin features (:func:`_thin_sign`): the
    pixels that differ most may be a lit or shadowed area the fit could not
    follow. What the polynomial cannot follow (a shadow's edge) is broader than
    the strokes: a morphological opening a few stroke widths wide keeps it and
    not the strokes, and is subtracted too.
    """
    from scipy import ndimage

    img = np.asarray(rgb, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    resid = img - fit_background(img)
    direction = _ink_direction(resid)
    if direction is None:
        return InkMap(np.zeros(img.shape[:2], dtype=np.float32), max(_mad_sigma(resid), 1.0 / 255))
    ink = (resid @ direction.astype(np.float32)).astype(np.float32)
    ink *= np.float32(_thin_sign(ink))
    width = _stroke_width(ink)
    if width is not None:
        side = int(np.clip(4 * width + 3, 5, max(5, min(ink.shape) // 3)))
        ink = ink - _opening(ndimage.gaussian_filter(ink, 1.0), side)
    ink -= np.float32(_median(ink))
    return InkMap(ink, max(_mad_sigma(ink), 0.5 / 255))


def _thin_sign(x: np.ndarray) -> float:
    """+1 if the thin features of ``x`` (what a blur of 1/8 of the frame does not keep) stand out
    more above the paper than below it, else -1. Strokes are thin and one-sided; a shadow's
    edge, once high-passed, is about as much above as below."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(x, 1.0)
    high = smooth - ndimage.gaussian_filter(smooth, max(3.0, min(x.shape) / 8))
    cut = NOISE_SIGMAS * max(_mad_sigma(high), 0.5 / 255)
    above = float(np.clip(high - cut, 0, None).sum())
    below = float(np.clip(-high - cut, 0, None).sum())
    return 1.0 if above >= below else -1.0


def _opening(x: np.ndarray, side: int) -> np.ndarray:
    """Grey opening of ``x`` with a ``side`` x ``side`` square, computed on ``x`` reduced by block means
    (the result is broad by construction, so a coarse grid loses nothing that matters)."""
    from PIL import Image
    from scipy import ndimage

    f = max(1, side // 12)
    h, w = x.shape
    gh, gw = max(1, h // f), max(1, w // f)
    small = x[:gh * f, :gw * f].reshape(gh, f, gw, f).mean(axis=(1, 3))
    opened = ndimage.grey_opening(small, size=(max(1, round(side / f)),) * 2)
    return np.asarray(Image.fromarray(opened.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def _median(x: np.ndarray, samples: int = 40_000) -> float:
    x = np.asarray(x).ravel()
    return float(np.median(x[:: max(1, x.size // samples)]))


# ----- 3. the digit ----------------------------------------------------------------------
def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the cut maximising the between-class variance."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-9:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    total = m0[-1]
    w1 = 1 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def find_digit(ink: InkMap, where: str = "image") -> np.ndarray:
    """The digit's strokes: float32 (H, W) in [0, 1], 0 off the digit; raises :class:`NoDigit`.

    The main connected component of the thresholded ink, with the components
    near it that hold a fair share of ink (a broken stroke, the bar of a 5).
    """
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(ink.ink, sigma=1.0)
    noise = max(_mad_sigma(smooth), 0.5 / 255)
    base = _median(smooth)
    threshold = max(otsu_threshold(smooth), base + NOISE_SIGMAS * noise)
    mask = smooth > threshold
    if not mask.any():
        raise NoDigit(f"{where}: no digit-like stroke found (blank page)")
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    index = np.arange(1, n + 1)
    mass = np.asarray(ndimage.sum(smooth - threshold, labels, index))
    boxes = ndimage.find_objects(labels)
    # A component lying along the frame's edge for half its length or more is a shadow, the
    # table or the paper's edge, not a digit (a digit cut by a tight crop touches it at stroke ends).
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    contact = np.bincount(border, minlength=n + 1)[1:]
    extent = np.array([max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes])
    edge = contact >= FRAME_EDGE * extent
    if edge.all():
        raise NoDigit(f"{where}: no digit-like stroke found (only shadows or edges along the frame)")
    mass = np.where(edge, 0.0, mass)
    main = int(np.argmax(mass))
    # (top, left, bottom, right) of every component; the group grows to a fixed point: every
    # component with enough ink within reach of the group's box (which grows with it) joins.
    rect = np.array([_box(b) for b in boxes])
    in_group = np.zeros(n, dtype=bool)
    in_group[main] = True
    candidate = mass >= NEAR_MASS * mass[main]
    top, left, bottom, right = rect[main]
    while True:
        reach = NEAR * max(bottom - top, right - left)
        gap = np.maximum.reduce([rect[:, 0] - bottom, top - rect[:, 2], rect[:, 1] - right, left - rect[:, 3],
                                 np.zeros(n, dtype=rect.dtype)])
        joining = candidate & ~in_group & (gap <= reach)
        if not joining.any():
            break
        in_group |= joining
        top, left = rect[in_group, 0].min(), rect[in_group, 1].min()
        bottom, right = rect[in_group, 2].max(), rect[in_group, 3].max()
    chosen = np.isin(labels, index[in_group])
    share = float(mass[in_group].sum() / mass.sum())
    if share < MAIN_SHARE:
        raise NoDigit(f"{where}: no digit-like stroke found (the ink is scattered: noise or texture)")
    if chosen.mean() > MAX_COVER:
        raise NoDigit(f"{where}: no digit-like stroke found (ink covers most of the frame)")
    if max(bottom - top, right - left) < MIN_EXTENT:
        raise NoDigit(f"{where}: no digit-like stroke found (only a speck)")
    level = float(np.percentile(smooth[chosen], 90)) - base
    if level < MIN_CONTRAST or level < MIN_SNR * noise:
        raise NoDigit(f"{where}: no digit-like stroke found (the marks hardly stand out of the noise)")
    # The strokes' anti-aliased edges lie just outside the threshold: keep a margin around them.
    region = ndimage.binary_dilation(chosen, iterations=2)
    floor = base + 2 * noise
    return np.where(region, np.clip((smooth - floor) / max(level + base - floor, 1e-6), 0, 1), 0).astype(np.float32)


def _box(slices) -> tuple[int, int, int, int]:
    return slices[0].start, slices[1].start, slices[0].stop, slices[1].stop


# ----- 4. MNIST framing ------------------------------------------------------------------
def frame_mnist(strokes: np.ndarray, where: str = "image") -> np.ndarray:
    """float32 (H, W) in [0, 1], a light digit on black -> (28, 28): longer side 20, centre of mass at (14, 14)."""
    from PIL import Image

    x = np.asarray(strokes, dtype=np.float32)
    rows, cols = np.nonzero(x > 0)
    if len(rows) == 0:
        raise NoDigit(f"{where}: no digit-like stroke found (blank page)")
    x = x[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = x.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(x).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0.0, 1.0)
    total = small.sum()
    if total <= 0:
        raise NoDigit(f"{where}: no digit-like stroke found (blank page)")
    ys, xs = np.mgrid[0:nh, 0:nw]
    cy, cx = float((ys * small).sum() / total), float((xs * small).sum() / total)
    # Top-left corner that puts the centre of mass at pixel (14, 14), where MNIST's
    # digits have it (mean over the embedded 5,000: 13.99, 14.00), inside the frame.
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - nh))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - nw))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + nh, left:left + nw] = small
    # A photo's strokes come out of the resampling dimmer than MNIST's, whose ink is saturated:
    # in MNIST 45% of the ink pixels (above 0.1) are 0.95 or more, so the 55th percentile becomes 1.
    ink = out[out > 0.1 * out.max()]
    level = float(np.percentile(ink, 100 * (1 - SATURATED))) if ink.size else 0.0
    return np.clip(out / level, 0.0, 1.0) if level > 0 else out


def to_mnist(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Greyscale (H, W) or RGB (H, W, 3) in [0, 1] -> float32 (28, 28) in [0, 1], a light digit centred on black.

    Stages 2-4 of the module's docstring; raises :class:`NoDigit` when no
    digit-like stroke is found.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        raise DataError(f"{where}: expected a greyscale or RGB image, got shape {img.shape}")
    return frame_mnist(find_digit(ink_map(img), where), where)


def prepare_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file -> float32 (28, 28) in [0, 1]; raises :class:`DataError` or :class:`NoDigit`."""
    return to_mnist(decode_image(path, max_pixels), str(path))


def image_files(arguments: list[str | Path]) -> list[Path]:
    """The files named, a folder standing for its images (suffixes in ``IMAGE_SUFFIXES``, sorted by name).

    A folder without images is still listed (as itself), so that it gets its own error.
    """
    out: list[Path] = []
    for a in arguments:
        p = Path(a)
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file())
            out.extend(found if found else [p])
        else:
            out.append(p)
    return out
