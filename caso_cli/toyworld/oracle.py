"""An exact oracle for toy faces that reads pixels only (never the render parameters).

Method, for a batch of 32x32 RGB images (all steps vectorised over the batch):

1. **Background**: the per-channel median of the 124 border pixels (the face never reaches
   the border; the background is one flat colour).
2. **Face box**: on a 3x3 box-smoothed copy (which averages noise away), every pixel gets a
   soft foreground weight from its RGB distance to the background colour (0 below
   ``FG_DIST[0]``, 1 above ``FG_DIST[1]``). The foreground is the face ellipse plus the hair
   cap, a shape fixed up to position and scale whatever the attributes are (every feature is
   drawn inside the face). Its area and centroid, compared with the same moments of the ideal
   shape (computed from the renderer's geometry), give the face centre (cx, cy) and the
   semi-axes (a, b = 1.15 a).
3. **Face coordinates**: the image is resampled bilinearly on a grid in face-normalised
   coordinates ``u = (x - cx) / a``, ``v = (y - cy) / b``, so every region below is fixed in
   (u, v) however the face moved or scaled.
4. **Skin**: the median colour of two cheek patches (nothing is ever drawn there). Darkness
   is ``1 - luminance / skin luminance``; it is about 0 on skin and 0.5-0.9 on the dark
   features whatever the skin tone.
5. **Readings**, each one number compared with one threshold:

   - mustache: mean darkness of the centre of the band under the nose;
   - glasses: mean darkness of the annuli where the lens rings are (the eyes, inside, are
     excluded);
   - smile: mean darkness where only a smile is drawn (the raised mouth corners and the low
     centre of the U) minus where only the neutral line is drawn;
   - hair: the nearest of the three hair colours to the mean colour of a patch inside the cap;
   - eye shape (a nuisance, best effort): darkness just above and below the eye centre
     relative to the eye centre row (round eyes are taller).

   Binary thresholds are the midpoints of the gap between the two classes' scores on clean
   renders (seed 1234, 4,000 faces; see :func:`score_ranges`), so a perturbation must move a
   score half the gap before a reading flips.

Assumptions and limits (what the oracle does not handle):

- The image is a toy face from :mod:`caso_cli.toyworld.render` or a model trained on them:
  one face, roughly centred, on a flat background that fills the border, with the hair on
  top; the face must not touch the image border.
- Readings assume the renderer's layout in face units; a generated face whose parts sit
  elsewhere (e.g. a mustache drawn at mouth height) is read by where the regions are, not by
  what a person would call it.
- Eye-shape readings are reliable only without glasses and without blur (the eyes are about
  2 pixels wide at 32x32); the four attributes do not depend on them.
- ``face_found`` is false when the foreground is implausibly small, large or off-centre; the
  other readings of such an image are meaningless.
- Tested robustness: Gaussian blur (sigma 0.7 px), additive Gaussian noise (std 8/255) and a
  per-image colour shift of up to +-12/255 per channel; measured agreement is in
  ``caso_cli/toyworld/NOTES_renderer.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from caso_cli.toyworld import render as R

# ---- constants; thresholds are documented where they are defined -------------------------

FG_DIST = (20.0, 40.0)  # RGB distance to the background: soft foreground weight ramps 0 -> 1
GRID = 53  # samples per side of the face-coordinate grid
GRID_EXTENT = 1.3  # the grid spans u, v in [-GRID_EXTENT, GRID_EXTENT]

# Regions in face units (u, v). Each avoids every other feature by at least ~0.05.
CHEEKS = dict(u=(0.58, 0.85), v=(0.10, 0.30))  # |u| in range: skin only
MUSTACHE_REGION = dict(u=(-0.30, 0.30), v=(0.18, 0.34))
GLASSES_RING = (0.21, 0.31)  # annulus radii (in a, pixel-round) around each eye centre
SMILE_CORNERS = dict(u=(0.40, 0.52), v=(0.52, 0.66))  # |u| in range
SMILE_LOW = dict(u=(-0.25, 0.25), v=(0.72, 0.84))
NEUTRAL_LINE = dict(u=(-0.20, 0.20), v=(0.49, 0.57))
HAIR_PATCH = dict(u=(-0.40, 0.40), v=(-1.00, -0.70))

# Thresholds: midpoints of the class gaps on clean renders (see score_ranges()).
THRESHOLDS = {"mustache": 0.30, "glasses": 0.30, "smile": 0.0, "eye_shape": 0.5}


@dataclass
class Readings:
    """What the oracle read from N images (arrays of length N)."""

    mustache: np.ndarray  # (N,) int8, 1 = yes
    glasses: np.ndarray  # (N,) int8
    smile: np.ndarray  # (N,) int8
    hair: np.ndarray  # (N,) int8, index into ATTRIBUTES["hair"]
    eye_shape: np.ndarray  # (N,) int8, index into EYE_SHAPES (best effort)
    face_found: np.ndarray  # (N,) bool
    cx: np.ndarray  # (N,) face centre x, pixels
    cy: np.ndarray  # (N,) face centre y
    face_w: np.ndarray  # (N,) semi-axis a
    face_h: np.ndarray  # (N,) semi-axis b
    skin_rgb: np.ndarray  # (N, 3)
    skin_tone: np.ndarray  # (N,) projection on the renderer's skin line, 0 light .. 1 dark
    background: np.ndarray  # (N, 3)
    scores: dict[str, np.ndarray]  # raw measurements: mustache, glasses, smile, eye_shape, hair_dist

    def __len__(self) -> int:
        return int(self.mustache.shape[0])

    def labels(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in R.ATTRIBUTES}

    def to_dicts(self) -> list[dict[str, object]]:
        """One JSON-ready dict per image: class names, then nuisance readings and raw scores."""
        out = []
        for i in range(len(self)):
            d: dict[str, object] = {name: R.ATTRIBUTES[name][int(getattr(self, name)[i])]
                                    for name in R.ATTRIBUTES}
            d.update(
                eye_shape=R.EYE_SHAPES[int(self.eye_shape[i])],
                face_found=bool(self.face_found[i]),
                face={"cx": _r(self.cx[i]), "cy": _r(self.cy[i]),
                      "w": _r(self.face_w[i]), "h": _r(self.face_h[i])},
                skin_rgb=[_r(c, 1) for c in self.skin_rgb[i]],
                skin_tone=_r(self.skin_tone[i], 3),
                background_rgb=[_r(c, 1) for c in self.background[i]],
                scores={k: (_r(v[i], 3) if v.ndim == 1 else [_r(x, 1) for x in v[i]])
                        for k, v in self.scores.items()},
            )
            out.append(d)
        return out


def _r(x: object, nd: int = 2) -> float:
    return round(float(x), nd)


# ---- image helpers ----------------------------------------------------------------------------

def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge replication over axes 1, 2 of (N, H, W, C)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _border(x: np.ndarray) -> np.ndarray:
    """(N, P, C) pixels of the 1-pixel image border."""
    return np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)


@lru_cache(maxsize=1)
def _shape_moments() -> tuple[float, float]:
    """Area / a**2 and (centroid y - cy) / b of the ideal face+hair silhouette (from the geometry)."""
    n = 1201
    t = np.linspace(-1.3, 1.3, n)
    u, v = np.meshgrid(t, t, indexing="xy")  # v is measured in units of b
    face = u**2 + v**2 <= 1.0
    hair = ((u / R.HAIR_OUTER[0]) ** 2 + (v / R.HAIR_OUTER[1]) ** 2 <= 1.0) & (v < R.HAIRLINE_V)
    sil = face | hair
    cell = (t[1] - t[0]) ** 2
    area_ab = sil.sum() * cell  # area in units of a*b
    return float(area_ab * R.FACE_ASPECT), float(v[sil].mean())


def _interp_weights(coord: np.ndarray, size: int) -> np.ndarray:
    """(N, G, size) bilinear (triangle-kernel) weights to sample pixel coordinates ``coord`` (N, G)."""
    f = np.clip(coord - 0.5, 0.0, size - 1.0)  # pixel centres sit at i + 0.5
    return np.maximum(0.0, 1.0 - np.abs(f[..., None] - np.arange(size, dtype=np.float32)))


def _sample(x: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Bilinear samples of (N, H, W, C) on the separable grid ``py`` (N, Gv) x ``px`` (N, Gu).

    Returns (N, Gv, Gu, C). Two batched matrix products, so it is fast on the CPU.
    """
    n, h, w, c = x.shape
    wy = _interp_weights(py, h).astype(np.float32)  # (N, Gv, H)
    wx = _interp_weights(px, w).astype(np.float32)  # (N, Gu, W)
    rows = wy @ x.reshape(n, h, w * c)  # (N, Gv, W*C)
    rows = rows.reshape(n, -1, w, c).transpose(0, 1, 3, 2)  # (N, Gv, C, W)
    out = rows @ wx.transpose(0, 2, 1)[:, None]  # (N, Gv, C, Gu)
    return out.transpose(0, 1, 3, 2)


def _box_mask(uu: np.ndarray, vv: np.ndarray, u: tuple[float, float], v: tuple[float, float],
              mirror: bool = False) -> np.ndarray:
    uu = np.abs(uu) if mirror else uu
    return (uu >= u[0]) & (uu <= u[1]) & (vv >= v[0]) & (vv <= v[1])


def _region_mean(m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of (N, G, G) values over a (G, G) boolean mask."""
    return m[:, mask].mean(axis=1)


# ---- the oracle -------------------------------------------------------------------------------

def _shift_all(m: np.ndarray, op: np.ufunc) -> np.ndarray:
    """3x3 morphological max (dilation, ``np.logical_or``) or min (erosion, ``np.logical_and``)."""
    pad = np.pad(m, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = m.shape[1:]
    out = m.copy()
    for i in range(3):
        for j in range(3):
            out = op(out, pad[:, i:i + h, j:j + w])
    return out


def _moments(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area and centroid (x, y) of per-pixel coverage maps (N, H, W)."""
    h, w = alpha.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    area = alpha.sum(axis=(1, 2))
    safe = np.maximum(area, 1e-6)
    return area, (alpha * xs).sum(axis=(1, 2)) / safe, (alpha * ys).sum(axis=(1, 2)) / safe


def _box_from_moments(area: np.ndarray, mx: np.ndarray, my: np.ndarray) -> tuple[np.ndarray, ...]:
    k_area, c_y = _shape_moments()
    a = np.sqrt(np.maximum(area, 1e-6) / k_area)
    b = a * R.FACE_ASPECT
    return mx, my - c_y * b, a, b


def _patch_colour(x: np.ndarray, cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray,
                  region: dict[str, tuple[float, float]], mirror: bool = False) -> np.ndarray:
    """Median colour (N, 3) of a face-coordinate region, sampled on a coarse grid."""
    t = np.linspace(-GRID_EXTENT, GRID_EXTENT, 27, dtype=np.float32)
    uu, vv = np.meshgrid(t, t, indexing="xy")
    face = _sample(x, cx[:, None] + t[None] * a[:, None], cy[:, None] + t[None] * b[:, None])
    return np.median(face[:, _box_mask(uu, vv, **region, mirror=mirror)], axis=1)


def locate_face(images: np.ndarray) -> tuple[np.ndarray, ...]:
    """Background colour and face box from pixels: ``(bg (N,3), cx, cy, a, b, found)``.

    Pass 1 thresholds a smoothed distance-to-background map (robust to noise, but it counts
    every mixed edge pixel as face, so the box comes out ~0.7 px too big). Pass 2 measures the
    coverage of each edge pixel exactly: an edge pixel is a mix ``alpha * c + (1 - alpha) * bg``
    of the background and one of skin / hair / frame colour ``c`` (read with the pass-1 box),
    so ``alpha`` is its projection on ``c - bg``. Core pixels count 1, far pixels 0; the area
    and centroid of this coverage map give the box without bias.
    """
    x = np.asarray(images, dtype=np.float32)
    h, w = x.shape[1:3]
    bg = np.median(_border(x), axis=1)
    diff = x - bg[:, None, None, :]
    dist_s = np.linalg.norm(_box3(x) - bg[:, None, None, :], axis=-1)
    f = np.clip((dist_s - FG_DIST[0]) / (FG_DIST[1] - FG_DIST[0]), 0.0, 1.0)
    cx, cy, a, b = _box_from_moments(*_moments(f))

    # pass 2: exact coverage at the silhouette edge
    skin = _patch_colour(x, cx, cy, a, b, CHEEKS, mirror=True)
    hair = _patch_colour(x, cx, cy, a, b, HAIR_PATCH)
    fixed = [np.broadcast_to(c, skin.shape) for c in (R.GLASSES_RGB, R.MOUTH_RGB)]
    cands = np.stack([skin, hair, *fixed], axis=1)  # (N, K, 3)
    dirs = cands - bg[:, None, :]
    d2 = np.maximum((dirs**2).sum(-1), 1.0)  # (N, K)
    proj = np.einsum("nhwc,nkc->nhwk", diff, dirs)  # (N, H, W, K)
    cos = proj / np.sqrt(d2)[:, None, None, :] / np.maximum(np.linalg.norm(diff, axis=-1), 1e-3)[..., None]
    best = cos.argmax(axis=-1)[..., None]
    alpha = np.take_along_axis(proj / d2[:, None, None, :], best, axis=-1)[..., 0]
    alpha = np.clip(alpha, -0.5, 1.5)  # keep noise roughly zero-mean on background pixels
    fg = dist_s > 0.5 * (FG_DIST[0] + FG_DIST[1])
    core = _shift_all(_shift_all(fg, np.logical_and), np.logical_and)
    band = _shift_all(_shift_all(fg, np.logical_or), np.logical_or) & ~core
    cover = np.where(core, 1.0, np.where(band, alpha, 0.0)).astype(np.float32)
    cx, cy, a, b = _box_from_moments(*_moments(cover))
    # plausibility: size within the renderer's range (with margin), centre not far off
    found = (a > 5.0) & (a < 12.0) & (np.abs(cx - w / 2) < 6) & (np.abs(cy - h / 2) < 7)
    return bg, cx, cy, a, b, found


def read_attributes(images: np.ndarray) -> Readings:
    """Read attributes and nuisance values of (N, 32, 32, 3) uint8 toy faces from their pixels."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (R.IMAGE_SIZE, R.IMAGE_SIZE, 3):
        raise ValueError(f"expected (N, {R.IMAGE_SIZE}, {R.IMAGE_SIZE}, 3) images, got {x.shape}")
    x = x.astype(np.float32)
    n = x.shape[0]
    bg, cx, cy, a, b, found = locate_face(x)

    t = np.linspace(-GRID_EXTENT, GRID_EXTENT, GRID, dtype=np.float32)
    uu, vv = np.meshgrid(t, t, indexing="xy")  # (G, G): row = v, column = u
    px = cx[:, None] + t[None] * a[:, None]  # (N, G) pixel x of each grid column
    py = cy[:, None] + t[None] * b[:, None]
    face = _sample(x, px, py)  # (N, G, G, 3), rows = v

    cheeks = _box_mask(uu, vv, **CHEEKS, mirror=True)
    skin = np.median(face[:, cheeks], axis=1)  # (N, 3)
    lum_skin = np.maximum(_luma(skin), 1.0)
    dark = 1.0 - _luma(face) / lum_skin[:, None, None]

    s_mustache = _region_mean(dark, _box_mask(uu, vv, **MUSTACHE_REGION))

    # glasses: annuli in pixel-round units (v scaled by b / a, like the renderer's circles)
    ring = np.zeros_like(uu, dtype=bool)
    for side in (-1.0, 1.0):
        r = np.sqrt((uu - side * R.EYE_U) ** 2 + ((vv - R.EYE_V) * R.FACE_ASPECT) ** 2)
        ring |= (r >= GLASSES_RING[0]) & (r <= GLASSES_RING[1])
    s_glasses = _region_mean(dark, ring)

    smile_only = 0.5 * (_region_mean(dark, _box_mask(uu, vv, **SMILE_CORNERS, mirror=True))
                        + _region_mean(dark, _box_mask(uu, vv, **SMILE_LOW)))
    line_only = _region_mean(dark, _box_mask(uu, vv, **NEUTRAL_LINE))
    # contrast-free: +1 when only smile regions are dark, -1 when only the neutral line is
    s_smile = (smile_only - line_only) / (np.abs(smile_only) + np.abs(line_only) + 0.1)

    hair_rgb = face[:, _box_mask(uu, vv, **HAIR_PATCH)].mean(axis=1)
    hair_dist = np.linalg.norm(hair_rgb[:, None, :] - R.HAIR_RGB[None], axis=-1)  # (N, 3)

    # eye shape: darkness 0.09-0.15 b above/below the eye centre relative to the centre row
    eye_u = (np.abs(np.abs(uu) - R.EYE_U) <= 0.06)
    centre = _region_mean(dark, eye_u & (np.abs(vv - R.EYE_V) <= 0.03))
    off = _region_mean(dark, eye_u & (np.abs(np.abs(vv - R.EYE_V) - 0.12) <= 0.03))
    s_eye = 1.0 - off / np.maximum(centre, 1e-3)  # ~0 round (as tall as wide), ~1 narrow

    span = R.SKIN_DARK - R.SKIN_LIGHT
    tone = ((skin - R.SKIN_LIGHT) @ span) / float(span @ span)

    return Readings(
        mustache=(s_mustache > THRESHOLDS["mustache"]).astype(np.int8),
        glasses=(s_glasses > THRESHOLDS["glasses"]).astype(np.int8),
        smile=(s_smile > THRESHOLDS["smile"]).astype(np.int8),
        hair=hair_dist.argmin(axis=1).astype(np.int8),
        eye_shape=(s_eye > THRESHOLDS["eye_shape"]).astype(np.int8),
        face_found=found,
        cx=cx, cy=cy, face_w=a, face_h=b,
        skin_rgb=skin, skin_tone=tone, background=bg,
        scores={"mustache": s_mustache, "glasses": s_glasses, "smile": s_smile,
                "eye_shape": s_eye, "hair_dist": hair_dist},
    ) if n else _empty()


def _empty() -> Readings:
    z = np.zeros(0, dtype=np.int8)
    f = np.zeros(0, dtype=np.float32)
    return Readings(z, z, z, z, z, np.zeros(0, bool), f, f, f, f, np.zeros((0, 3), np.float32), f,
                    np.zeros((0, 3), np.float32), {})


def agreement(readings: Readings, params: R.FaceParams, include_nuisance: bool = False) -> dict[str, float]:
    """Fraction of faces where the reading equals the label, per attribute (and ``"all"``).

    With ``include_nuisance`` also ``eye_shape`` and the mean absolute errors ``cx_mae``,
    ``cy_mae``, ``face_w_mae`` (pixels) and ``skin_tone_mae``.
    """
    if len(readings) != len(params):
        raise ValueError(f"{len(readings)} readings for {len(params)} faces")
    if len(params) == 0:
        return {}
    out: dict[str, float] = {}
    every = np.ones(len(params), dtype=bool)
    for name in R.ATTRIBUTES:
        ok = getattr(readings, name) == getattr(params, name)
        every &= ok
        out[name] = float(ok.mean())
    out["all"] = float(every.mean())
    if include_nuisance:
        out["eye_shape"] = float((readings.eye_shape == params.eye_shape).mean())
        out["cx_mae"] = float(np.abs(readings.cx - params.cx).mean())
        out["cy_mae"] = float(np.abs(readings.cy - params.cy).mean())
        out["face_w_mae"] = float(np.abs(readings.face_w - params.face_w).mean())
        out["skin_tone_mae"] = float(np.abs(readings.skin_tone - params.skin_tone).mean())
    return out


# ---- perturbations that mimic generated images ---------------------------------------------------

def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (N, H, W, C) with edge replication; float32 out."""
    x = np.asarray(images, dtype=np.float32)
    if sigma <= 0:
        return x
    rad = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = x.shape[1:3]
    p = np.pad(x, ((0, 0), (rad, rad), (0, 0), (0, 0)), mode="edge")
    x = sum(k[i] * p[:, i:i + h] for i in range(2 * rad + 1))
    p = np.pad(x, ((0, 0), (0, 0), (rad, rad), (0, 0)), mode="edge")
    return sum(k[i] * p[:, :, i:i + w] for i in range(2 * rad + 1))


def degrade(images: np.ndarray, seed: int, blur: float = 0.7, noise: float = 8.0,
            shift: float = 12.0) -> np.ndarray:
    """Blur (sigma px), add Gaussian noise (std, 0-255 units) and a per-image colour shift
    (uniform in +-shift per channel), then round to uint8: a stand-in for a tiny model's samples."""
    rng = np.random.default_rng(seed)
    x = gaussian_blur(images, blur)
    n = x.shape[0]
    x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32) if noise > 0 else x
    x = x + rng.uniform(-shift, shift, size=(n, 1, 1, 3)).astype(np.float32) if shift > 0 else x
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def score_ranges(images: np.ndarray, params: R.FaceParams) -> dict[str, tuple[float, float, float, float]]:
    """Per binary reading: (class-0 min, class-0 max, class-1 min, class-1 max) of its score.

    The threshold of a reading is the midpoint of the gap (class-0 max, class-1 min) on clean
    renders; this is how :data:`THRESHOLDS` were set.
    """
    rd = read_attributes(images)
    out = {}
    for name in ("mustache", "glasses", "smile", "eye_shape"):
        s, y = rd.scores[name], getattr(params, name)
        out[name] = (float(s[y == 0].min()), float(s[y == 0].max()),
                     float(s[y == 1].min()), float(s[y == 1].max()))
    return out
