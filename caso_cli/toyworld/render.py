"""Procedural "toy faces": 32x32 RGB images whose attributes are known exactly.

Each face is drawn at 64x64 with vectorised masks (one coordinate grid for the whole batch,
no per-pixel Python loops) and box-downsampled (2x2 mean) to 32x32, which also anti-aliases
the edges. The geometry is defined in face-normalised coordinates

    u = (x - cx) / a,   v = (y - cy) / b,   b = FACE_ASPECT * a,

so the face is the ellipse ``u**2 + v**2 <= 1`` whatever its position and size. Every shape
below is given in these units; :mod:`caso_cli.toyworld.oracle` reads the same regions back
from the pixels after locating the face.

Attributes (the things an edit should change), independent by default:

- ``mustache`` (no/yes): a thick dark-brown bar under the nose, about 8 x 2.4 pixels at 32 px.
- ``glasses`` (no/yes): two bold near-black rings around the eyes, a bridge between them and
  two arms out to the edge of the face.
- ``smile`` (no/yes): "yes" is a wide, thick U-shaped dark-red mouth whose corners rise
  towards the cheeks; "no" is a short, thin, straight line a little higher up. Both exist,
  so the mouth region is always readable.
- ``hair`` (black/blond/red): a cap of hair colour over the top of the head.

Nuisance factors (the things an edit must leave alone): face centre (``cx``, ``cy``) and size
(``face_w``; the height follows from the fixed aspect), skin tone (``skin_tone`` in [0, 1],
light to dark along a line in RGB), background colour (continuous, cool hues only, so it is
far from both the skin and the three hair colours) and eye shape (round or narrow).

Random numbers come from ``numpy.random.default_rng(seed)`` and are drawn in a fixed order,
one uniform per sample and factor, *before* any probability is applied: changing one
attribute's probability changes that attribute's labels only, never the nuisance values.
To render counterfactual pairs, change a label in a :class:`FaceParams` (see
:meth:`FaceParams.replace`) and render again: everything else stays identical.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caso_cli.errors import InputError, OutputExists, UsageError

SCHEMA_VERSION = 1
IMAGE_SIZE = 32  # output resolution
CANVAS = 64  # drawing resolution; box-downsampled 2x2 to IMAGE_SIZE
_UP = CANVAS // IMAGE_SIZE

#: Ordered attribute names and their classes; class index = label value.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "mustache": ("no", "yes"),
    "glasses": ("no", "yes"),
    "smile": ("no", "yes"),
    "hair": ("black", "blond", "red"),
}
BINARY_ATTRIBUTES = ("mustache", "glasses", "smile")
EYE_SHAPES = ("round", "narrow")

# ---- palette (RGB 0-255). Minimum Euclidean distances over the whole ranges: hair to hair
# 175, hair to any skin tone 94, hair to any background 128, skin to any background 65
# (backgrounds are cool hues, skin is orange); the oracle relies on these gaps.
HAIR_RGB = np.array([[30, 25, 28], [240, 210, 50], [205, 35, 35]], dtype=np.float32)
SKIN_LIGHT = np.array([236, 196, 164], dtype=np.float32)
SKIN_DARK = np.array([141, 96, 66], dtype=np.float32)
EYE_RGB = np.array([35, 30, 40], dtype=np.float32)
GLASSES_RGB = np.array([20, 20, 30], dtype=np.float32)
MUSTACHE_RGB = np.array([50, 32, 22], dtype=np.float32)
MOUTH_RGB = np.array([120, 28, 40], dtype=np.float32)
NOSE_SHADE = 0.82  # the nose is the skin colour times this
BG_HUE = (0.40, 0.72)  # HSV hue range of the background: green-cyan-blue-violet
BG_SAT = (0.20, 0.50)
BG_VAL = (0.55, 0.90)

# ---- geometry, in face units (u = x / a, v = y / b relative to the face centre)
FACE_ASPECT = 1.15  # b / a
HAIR_OUTER = (1.10, 1.12)  # semi-axes (in a, b) of the ellipse bounding the hair cap
HAIRLINE_V = -0.55  # the hair covers the face above this line
EYE_U, EYE_V = 0.40, -0.20  # eye centres at (+-EYE_U, EYE_V)
EYE_ROUND_R = 0.15  # radius of a round eye, in units of a
EYE_NARROW = (0.26, 0.05)  # semi-axes of a narrow eye, in units of (a, b)
GLASSES_R = 0.34  # outer radius of a lens ring, in units of a (a circle in pixels)
GLASSES_T = 4.0  # ring / bridge thickness, canvas pixels (2 px at 32)
ARM_T = 2.5  # arm thickness, canvas pixels
NOSE = (0.0, -0.01, 0.10, 0.09)  # centre u, v and semi-axes (in a, b)
MUSTACHE = (0.22, 0.48, 0.12)  # centre v, half-width (in a), half-height (in b): a rounded bar
NEUTRAL_MOUTH = (0.54, 0.36, 1.25)  # v, half-width (in a), half-thickness (canvas px)
SMILE = (0.78, 0.30, 0.55, 1.8)  # centre v, rise of the corners (in b), half-width (in a),
#                                   half-thickness (canvas px)

# nuisance ranges, in 32-px units
CENTRE = (16.0, 16.5)  # mean face centre (x, y); y is lower because the hair sits on top
FACE_W_RANGE = (7.5, 9.5)  # semi-axis a (half the face width)


@dataclass(frozen=True)
class RenderConfig:
    """How faces are sampled. Defaults: every attribute independent and balanced."""

    p_mustache: float = 0.5  # P(mustache = yes)
    p_glasses: float = 0.5  # P(glasses = yes)
    p_smile: float = 0.5  # P(smile = yes)
    hair_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # P(black), P(blond), P(red)
    p_narrow_eyes: float = 0.5  # P(eye shape = narrow), a nuisance factor
    jitter: float = 2.0  # face centre moves uniformly within +-jitter pixels (32-px units)
    face_w_range: tuple[float, float] = FACE_W_RANGE  # semi-axis a of the face, 32-px units
    skin_range: tuple[float, float] = (0.0, 1.0)  # skin tone t: 0 lightest, 1 darkest
    #: Odds multipliers of black hair for faces with a mustache and for dark skin (tone > 0.5): (1, 1) keeps
    #: every attribute independent; the second-generation model trains on correlated faces (TRAIN_CONFIG).
    black_hair_odds: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("p_mustache", "p_glasses", "p_smile", "p_narrow_eyes"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise UsageError(f"{name} must be in [0, 1], got {p}")
        probs = tuple(float(p) for p in self.hair_probs)
        if len(probs) != len(ATTRIBUTES["hair"]) or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
            raise UsageError(f"hair_probs must be {len(ATTRIBUTES['hair'])} non-negative numbers "
                             f"summing to 1, got {self.hair_probs}")
        object.__setattr__(self, "hair_probs", probs)
        if not 0.0 <= self.jitter <= 2.5:
            raise UsageError(f"jitter must be in [0, 2.5] pixels, got {self.jitter}")
        lo, hi = self.face_w_range
        if not 6.5 <= lo <= hi <= 10.0:
            raise UsageError(f"face_w_range must satisfy 6.5 <= lo <= hi <= 10, got {self.face_w_range}")
        lo, hi = self.skin_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise UsageError(f"skin_range must satisfy 0 <= lo <= hi <= 1, got {self.skin_range}")
        odds = tuple(float(o) for o in self.black_hair_odds)
        if len(odds) != 2 or min(odds) <= 0:
            raise UsageError(f"black_hair_odds must be two positive numbers, got {self.black_hair_odds}")
        object.__setattr__(self, "black_hair_odds", odds)


#: The training faces of the second-generation toy model: attributes correlated as in real data (black hair
#: three times as likely, in odds, with a mustache and with dark skin); every test set stays independent.
TRAIN_CONFIG = RenderConfig(black_hair_odds=(3.0, 3.0))
DARK_SKIN = 0.5  # skin tone above which a face counts as dark-skinned (the Dark_skin label)


@dataclass(frozen=True)
class FaceParams:
    """Everything that defines a batch of faces: labels plus nuisance values (arrays of length N).

    Labels are class indices into :data:`ATTRIBUTES`; positions and sizes are in 32-px units.
    """

    mustache: np.ndarray  # (N,) int8, 1 = yes
    glasses: np.ndarray  # (N,) int8
    smile: np.ndarray  # (N,) int8
    hair: np.ndarray  # (N,) int8, index into ATTRIBUTES["hair"]
    cx: np.ndarray  # (N,) float32, face centre x (pixels, 0 = left edge)
    cy: np.ndarray  # (N,) float32, face centre y
    face_w: np.ndarray  # (N,) float32, half the face width (semi-axis a)
    skin_tone: np.ndarray  # (N,) float32 in [0, 1]
    background: np.ndarray  # (N, 3) float32 RGB 0-255
    eye_shape: np.ndarray  # (N,) int8, index into EYE_SHAPES

    def __len__(self) -> int:
        return int(self.mustache.shape[0])

    @property
    def face_h(self) -> np.ndarray:
        """Half the face height (semi-axis b)."""
        return self.face_w * np.float32(FACE_ASPECT)

    @property
    def skin_rgb(self) -> np.ndarray:
        """(N, 3) skin colour, RGB 0-255."""
        return skin_colour(self.skin_tone)

    def labels(self) -> dict[str, np.ndarray]:
        """The attribute labels, keyed like :data:`ATTRIBUTES`."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def replace(self, **changes: object) -> FaceParams:
        """A copy with some fields replaced; scalars are broadcast (``p.replace(mustache=1)``)."""
        n = len(self)
        fixed = {}
        for name, value in changes.items():
            old = getattr(self, name)
            arr = np.asarray(value, dtype=old.dtype)
            fixed[name] = np.broadcast_to(arr, old.shape).copy()
        if fixed.get("background") is not None and fixed["background"].shape != (n, 3):
            raise UsageError("background must have shape (N, 3)")
        return dataclasses.replace(self, **fixed)

    def subset(self, index: np.ndarray | slice | Sequence[int]) -> FaceParams:
        """The faces at ``index``."""
        return FaceParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def rows(self) -> list[dict[str, object]]:
        """One plain dict per face (class names for labels, rounded floats for nuisances)."""
        skin = self.skin_rgb
        out = []
        for i in range(len(self)):
            row: dict[str, object] = {name: ATTRIBUTES[name][int(getattr(self, name)[i])] for name in ATTRIBUTES}
            row.update(
                cx=_short(self.cx[i]), cy=_short(self.cy[i]),
                face_w=_short(self.face_w[i]), face_h=_short(self.face_h[i]),
                skin_tone=_short(self.skin_tone[i]),
                skin_r=round(float(skin[i, 0]), 1), skin_g=round(float(skin[i, 1]), 1),
                skin_b=round(float(skin[i, 2]), 1),
                bg_r=_short(self.background[i, 0]), bg_g=_short(self.background[i, 1]),
                bg_b=_short(self.background[i, 2]),
                eye_shape=EYE_SHAPES[int(self.eye_shape[i])],
            )
            out.append(row)
        return out


def _short(x: float) -> float:
    """The shortest decimal that reads back as the same float32 (so labels.csv round-trips)."""
    return float(str(np.float32(x)))


def skin_colour(tone: np.ndarray) -> np.ndarray:
    """(N, 3) RGB of skin tones ``tone`` in [0, 1] (linear from light to dark)."""
    t = np.asarray(tone, dtype=np.float32)[..., None]
    return (SKIN_LIGHT + t * (SKIN_DARK - SKIN_LIGHT)).astype(np.float32)


def _background_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h, s, v, strict=True)],
                    dtype=np.float32).reshape(-1, 3) * 255.0


def sample_params(n: int, seed: int, config: RenderConfig | None = None) -> FaceParams:
    """Sample ``n`` faces. Deterministic for ``seed``; see the module docstring for the order."""
    if n < 0:
        raise UsageError(f"n must be >= 0, got {n}")
    cfg = config or RenderConfig()
    rng = np.random.default_rng(seed)
    # One block of uniforms in a fixed layout, so probabilities never shift other factors.
    r = rng.random((n, 12))
    lo, hi = cfg.face_w_range
    slo, shi = cfg.skin_range
    mustache = (r[:, 0] < cfg.p_mustache).astype(np.int8)
    skin_tone = (slo + r[:, 7] * (shi - slo)).astype(np.float32)
    probs = np.tile(np.asarray(cfg.hair_probs), (n, 1))  # (N, 3) per-face hair probabilities
    odds = np.where(mustache == 1, cfg.black_hair_odds[0], 1.0) * np.where(skin_tone > 0.5, cfg.black_hair_odds[1], 1.0)
    probs[:, 0] *= odds
    hair_cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    hair = np.minimum((r[:, 3:4] >= hair_cum).sum(axis=1), len(ATTRIBUTES["hair"]) - 1)
    return FaceParams(
        mustache=mustache,
        glasses=(r[:, 1] < cfg.p_glasses).astype(np.int8),
        smile=(r[:, 2] < cfg.p_smile).astype(np.int8),
        hair=hair.astype(np.int8),
        cx=(CENTRE[0] + (2 * r[:, 4] - 1) * cfg.jitter).astype(np.float32),
        cy=(CENTRE[1] + (2 * r[:, 5] - 1) * cfg.jitter).astype(np.float32),
        face_w=(lo + r[:, 6] * (hi - lo)).astype(np.float32),
        skin_tone=skin_tone,
        background=_background_rgb(
            BG_HUE[0] + r[:, 8] * (BG_HUE[1] - BG_HUE[0]),
            BG_SAT[0] + r[:, 9] * (BG_SAT[1] - BG_SAT[0]),
            BG_VAL[0] + r[:, 10] * (BG_VAL[1] - BG_VAL[0]),
        ),
        eye_shape=(r[:, 11] < cfg.p_narrow_eyes).astype(np.int8),
    )


# Paint layers, back to front; each pixel keeps the index of the last layer drawn over it.
_BG, _SKIN, _HAIR, _NOSE, _EYE, _GLASSES, _MUSTACHE, _MOUTH = range(8)


def _draw(p: FaceParams) -> np.ndarray:
    """Draw a batch at CANVAS resolution; returns (N, CANVAS, CANVAS, 3) float32."""
    n = len(p)
    s = float(_UP)
    # pixel centres in canvas pixels; per-face quantities broadcast as (N, 1, 1)
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) + 0.5
    cx = (p.cx * s)[:, None, None]
    cy = (p.cy * s)[:, None, None]
    a = (p.face_w * s)[:, None, None]
    b = a * FACE_ASPECT
    dx, dy = xs[None] - cx, ys[None] - cy  # canvas pixels from the face centre
    u, v = dx / a, dy / b

    layer = np.zeros((n, CANVAS, CANVAS), dtype=np.int64)  # _BG everywhere
    skin = p.skin_rgb
    palette = np.stack([  # (N, layers, 3): the colour of each layer in each face
        p.background, skin, HAIR_RGB[p.hair], skin * NOSE_SHADE,
        *(np.broadcast_to(c, skin.shape) for c in (EYE_RGB, GLASSES_RGB, MUSTACHE_RGB, MOUTH_RGB)),
    ], axis=1).astype(np.float32)

    # face, then the hair cap over its top and beyond
    layer[u**2 + v**2 <= 1.0] = _SKIN
    hair_mask = ((u / HAIR_OUTER[0]) ** 2 + (v / HAIR_OUTER[1]) ** 2 <= 1.0) & (v < HAIRLINE_V)
    layer[hair_mask] = _HAIR

    # nose: a slightly darker small ellipse
    nu, nv, nax, nby = NOSE
    layer[((u - nu) / nax) ** 2 + ((v - nv) / nby) ** 2 <= 1.0] = _NOSE

    # eyes
    narrow = (p.eye_shape == 1)[:, None, None]
    for side in (-1.0, 1.0):
        eu, ev = u - side * EYE_U, v - EYE_V
        round_eye = (eu * a) ** 2 + (ev * b) ** 2 <= (EYE_ROUND_R * a) ** 2
        narrow_eye = (eu / EYE_NARROW[0]) ** 2 + (ev / EYE_NARROW[1]) ** 2 <= 1.0
        layer[np.where(narrow, narrow_eye, round_eye)] = _EYE

    # glasses: rings (circles in pixels), a bridge and two arms
    has = (p.glasses == 1)[:, None, None]
    r_out = GLASSES_R * a
    frame = np.zeros((n, CANVAS, CANVAS), dtype=bool)
    for side in (-1.0, 1.0):
        d = np.sqrt((dx - side * EYE_U * a) ** 2 + (dy - EYE_V * b) ** 2)
        frame |= (d <= r_out) & (d >= r_out - GLASSES_T)
    eye_y = EYE_V * b
    frame |= (np.abs(dy - eye_y) <= GLASSES_T / 2) & (np.abs(dx) <= (EYE_U - GLASSES_R) * a + 1.0)
    arm = (np.abs(dy - eye_y) <= ARM_T / 2) & (np.abs(dx) >= EYE_U * a + r_out - 1.0) & (u**2 + v**2 <= 1.0)
    layer[has & (frame | arm)] = _GLASSES

    # mustache: a rounded bar (super-ellipse, power 4) under the nose
    mv, mhw, mhh = MUSTACHE
    bar = ((u / mhw) ** 2) ** 2 + (((v - mv) / mhh) ** 2) ** 2 <= 1.0
    layer[(p.mustache == 1)[:, None, None] & bar] = _MUSTACHE

    # mouth: neutral straight line, or a U-shaped smile (perpendicular distance to a parabola)
    lv, lhw, lht = NEUTRAL_MOUTH
    line = (np.abs(dy - lv * b) <= lht) & (np.abs(u) <= lhw)
    sv, rise, shw, sht = SMILE
    k = rise * b / (shw * a) ** 2  # curve y = sv*b - k*dx**2 (canvas pixels)
    y_curve = sv * b - k * dx**2
    dist = np.abs(dy - y_curve) / np.sqrt(1.0 + (2.0 * k * dx) ** 2)
    curve = (dist <= sht) & (np.abs(u) <= shw)
    smiling = (p.smile == 1)[:, None, None]
    layer[np.where(smiling, curve, line)] = _MOUTH
    return np.take_along_axis(palette, layer.reshape(n, -1, 1), axis=1).reshape(n, CANVAS, CANVAS, 3)


def downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Box (area) downsampling of (N, H, W, C) by an integer factor; float32 out."""
    out = sum(img[:, i::factor, j::factor].astype(np.float32) for i in range(factor) for j in range(factor))
    return out / np.float32(factor * factor)


def render(params: FaceParams, batch_size: int = 256) -> np.ndarray:
    """Render ``params``: (N, 32, 32, 3) uint8. Pure function of the parameters."""
    out = np.empty((len(params), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, len(params), batch_size):
        part = params.subset(slice(start, start + batch_size))
        small = downsample(_draw(part), _UP)
        out[start:start + len(part)] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def render_faces(n: int, seed: int, config: RenderConfig | None = None) -> tuple[np.ndarray, FaceParams]:
    """Sample and render ``n`` faces: ``(images (N, 32, 32, 3) uint8, params)``."""
    params = sample_params(n, seed, config)
    return render(params), params


def make_grid(images: np.ndarray, ncol: int = 8, scale: int = 1, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images into one (rows*H, ncol*W, 3) image, nearest-upscaled."""
    n, h, w, c = images.shape
    rows = max(1, -(-n // ncol))
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


# ---- the dataset on disk ------------------------------------------------------------------

LIST_ATTR_FILE = "list_attr_toy.txt"
LABELS_FILE = "labels.csv"
META_FILE = "toyworld.json"
IMAGES_DIR = "images"
#: CelebA-style column names of list_attr_toy.txt, in order.
LIST_ATTR_COLUMNS = (("Mustache", "Glasses", "Smile") + tuple(f"Hair_{c}" for c in ATTRIBUTES["hair"])
                     + ("Dark_skin", "Narrow_eyes"))
LABEL_COLUMNS = (
    "path", "mustache", "glasses", "smile", "hair", "cx", "cy", "face_w", "face_h", "skin_tone",
    "skin_r", "skin_g", "skin_b", "bg_r", "bg_g", "bg_b", "eye_shape",
)


def _own_files(out_dir: Path) -> list[Path]:
    """Files that write_dataset writes (and may replace) under ``out_dir``."""
    own = [out_dir / f for f in (LIST_ATTR_FILE, LABELS_FILE, META_FILE)]
    img_dir = out_dir / IMAGES_DIR
    if img_dir.is_dir():
        own += [f for f in img_dir.glob("*.png") if f.stem.isdigit()]
    return [f for f in own if f.exists()]


def write_dataset(
    out_dir: str | Path,
    n: int,
    seed: int,
    config: RenderConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> FaceParams:
    """Render ``n`` faces into ``out_dir`` like a real labelled data set.

    Writes ``images/000000.png``..., ``list_attr_toy.txt`` (CelebA layout: the count, the
    column names, then ``filename`` and one 1/-1 per column: the three binary attributes and
    a one-hot ``Hair_<class>`` column per hair colour), ``labels.csv`` (labels by class name
    plus every nuisance value) and ``toyworld.json`` (seed, count, config, schema version).
    A non-empty ``out_dir`` is refused unless ``overwrite``; then only files this function
    writes (numbered PNGs under ``images/`` and the three label files) are removed first.
    ``progress(done, total)`` is called after each chunk.
    """
    from PIL import Image

    cfg = config or RenderConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExists(f"{out}: not empty (overwrite=True replaces the files a previous render wrote)")
        for f in _own_files(out):
            f.unlink()
    img_dir = out / IMAGES_DIR
    img_dir.mkdir(parents=True, exist_ok=True)

    params = sample_params(n, seed, cfg)
    width = max(6, len(str(max(n - 1, 0))))
    names = [f"{i:0{width}d}.png" for i in range(n)]
    chunk = 512
    for start in range(0, n, chunk):
        part = params.subset(slice(start, start + chunk))
        images = render(part)
        for j, im in enumerate(images):
            Image.fromarray(im, "RGB").save(img_dir / names[start + j], optimize=False)
        if progress is not None:
            progress(min(start + chunk, n), n)

    onehot = np.stack(
        [params.mustache, params.glasses, params.smile]
        + [(params.hair == k).astype(np.int8) for k in range(len(ATTRIBUTES["hair"]))]
        + [(params.skin_tone > DARK_SKIN).astype(np.int8), params.eye_shape],
        axis=1,
    )
    lines = [str(n), " ".join(LIST_ATTR_COLUMNS)]
    for name, row in zip(names, onehot, strict=True):
        lines.append(name + " " + " ".join(" 1" if x else "-1" for x in row))
    _write_text(out / LIST_ATTR_FILE, "\n".join(lines) + "\n")

    tmp = out / (LABELS_FILE + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        for name, row in zip(names, params.rows(), strict=True):
            writer.writerow({"path": f"{IMAGES_DIR}/{name}", **row})
    tmp.replace(out / LABELS_FILE)

    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": "caso-toyworld",
        "n": n,
        "seed": seed,
        "image_size": IMAGE_SIZE,
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "config": dataclasses.asdict(cfg),
    }
    _write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    return params


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class ToyDataset:
    """A data set read back from :func:`write_dataset`'s ``labels.csv``."""

    root: Path
    paths: list[Path] = field(default_factory=list)  # absolute image paths
    params: FaceParams | None = None


def read_dataset(root: str | Path) -> ToyDataset:
    """Read ``labels.csv`` of a directory written by :func:`write_dataset`."""
    root = Path(root)
    path = root / LABELS_FILE
    if not path.is_file():
        raise InputError(f"{path} not found (not a toy-world data set?)")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        def col(name: str, dtype: type) -> np.ndarray:
            return np.array([dtype(r[name]) for r in rows])

        def cls(name: str, classes: tuple[str, ...]) -> np.ndarray:
            return np.array([classes.index(r[name]) for r in rows], dtype=np.int8)

        params = FaceParams(
            mustache=cls("mustache", ATTRIBUTES["mustache"]),
            glasses=cls("glasses", ATTRIBUTES["glasses"]),
            smile=cls("smile", ATTRIBUTES["smile"]),
            hair=cls("hair", ATTRIBUTES["hair"]),
            cx=col("cx", float).astype(np.float32),
            cy=col("cy", float).astype(np.float32),
            face_w=col("face_w", float).astype(np.float32),
            skin_tone=col("skin_tone", float).astype(np.float32),
            background=np.stack([col(c, float) for c in ("bg_r", "bg_g", "bg_b")], axis=1)
            .reshape(-1, 3).astype(np.float32),
            eye_shape=cls("eye_shape", EYE_SHAPES),
        )
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: malformed labels ({exc})") from exc
    return ToyDataset(root=root, paths=[root / r["path"] for r in rows], params=params)
