"""An exact oracle for toy faces that reads pixels only (never the render parameters).

Method, for a batch of 32x32 RGB images (all steps vectorised over the batch):

1. **Background**: the per-channel median of the 124 border pixels (the face never reaches
   the border; the background is one flat colour).
2. **Face box** (:func:`locate_face`): the foreground is the face ellipse plus the hair cap,
   a silhouette fixed up to position and scale whatever the attributes are (every feature is
   drawn inside the face). Pass 1 thresholds the distance to the background on a 3x3
   box-smoothed copy (which averages noise away). Pass 2 gives each pixel near the edge its
   coverage ``alpha``, the projection of ``pixel - background`` on ``colour - background`` for
   the skin, hair, frame or mouth colour it mixes with. The area and centroid of this
   coverage map, against the same moments of the ideal silhouette (from the renderer's
   geometry), give the centre (cx, cy) and semi-axes (a, b = 1.15 a) to ~0.03 px on clean
   renders. ``face_fit`` is the IoU of the half-covered pixels with the ideal silhouette.
3. **Face coordinates**: the image is resampled bilinearly on a 53x53 grid in face-normalised
   coordinates ``u = (x - cx) / a``, ``v = (y - cy) / b``, so every region below is fixed in
   (u, v) however the face moved or scaled.
4. **Skin**: the median colour of two cheek patches (nothing is ever drawn there). Darkness
   is ``1 - luminance / skin luminance``: about 0 on skin and 0.4-0.9 on the dark features
   whatever the skin tone.
5. **Readings**, each one number compared with one threshold:

   - mustache: mean darkness of the centre of the bar under the nose (~0 / ~0.65);
   - glasses: mean darkness of the two annuli where the lens rings are; the eyes, inside
     them, are excluded (~0 / ~0.7);
   - smile: ``(S - L) / (S + L + 0.1)`` with S the mean darkness where only a smile is drawn
     (the raised mouth corners and the low centre of the U) and L where only the neutral
     line is drawn; the ratio cancels the mouth's contrast, lower on dark skin (~-0.8 / +0.8);
   - hair: the nearest of the three hair colours to the mean colour of a patch in the cap;
   - eye shape (a nuisance; read only without glasses, ``UNKNOWN`` under them): horizontal
     minus vertical variance (px**2) of the darkness around each eye (~0 round, ~1 narrow).

   Thresholds are the midpoints of the gap between the two classes' scores on 4,000 clean
   renders (seed 1234; :func:`score_ranges`), so a perturbation must move a score half the
   gap before a reading flips.

Measured agreement (2,000 fresh renders, seed 20251125; details in NOTES_renderer.md):
100% on each attribute clean; 100% under blur sigma 0.7-0.8 px + noise std 8 + colour shift
+-12; >= 99.8% under blur 1.0 + noise 10 + shift 20.

Assumptions and limits:

- The image is a toy face from :mod:`caso_cli.toyworld.render` or a model trained on them:
  one face, roughly centred, on a flat background that fills the border, hair on top, the
  face not touching the border. ``face_found`` is false when the silhouette is implausibly
  small, large, off-centre or misshapen (``face_fit`` < ``MIN_FIT``); the other readings of
  such an image are meaningless.
- Readings assume the renderer's layout in face units: a generated face whose parts sit
  elsewhere (e.g. a mustache at mouth height) is read by where the regions are, not by what
  a person would call it. Half-drawn features give scores between the classes; the raw
  ``scores`` show how close to a threshold a reading was.
- Hair is always one of the three classes (nearest colour); there is no "other".
- Heavy loss of detail breaks the mouth reading first: images downsampled to 16x16 and back
  read smile at ~92% (glasses ~99%, mustache and hair 100%).
- Low contrast plus blur lowers the glasses score first (darkness is relative to the skin):
  98.75% at contrast x0.75 with blur 0.7, noise 8 and shift 12.
- Eye shape (eyes are 2-4 pixels wide) is reliable only on sharp images: 100% clean, ~98%
  under blur 0.7 + noise, ~87% under blur 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from caso_cli.toyworld import render as R

if TYPE_CHECKING:
    from caso_cli.eval.oracles import Oracle

# ---- constants; thresholds are documented where they are defined -------------------------

FG_DIST = (20.0, 40.0)  # RGB distance to the background: soft foreground weight ramps 0 -> 1
GRID = 53  # samples per side of the face-coordinate grid
GRID_EXTENT = 1.3  # the grid spans u, v in [-GRID_EXTENT, GRID_EXTENT]



@dataclass(frozen=True)
class Box:
    """A rectangle in face units; ``mirror`` means the u range applies to ``|u|`` (both sides)."""

    u: tuple[float, float]
    v: tuple[float, float]
    mirror: bool = False


# Regions in face units (u, v), placed from the renderer's geometry so that each one stays
# clear of every other feature (checked on per-cell class maps of clean and blurred renders).
CHEEKS = Box(u=(0.58, 0.85), v=(0.10, 0.30), mirror=True)  # skin only, never drawn on
MUSTACHE_REGION = Box(u=(-0.30, 0.30), v=(0.14, 0.30))
GLASSES_RING = (0.21, 0.31)  # annulus radii (in a, pixel-round) around each eye centre
SMILE_CORNERS = Box(u=(0.40, 0.52), v=(0.52, 0.66), mirror=True)  # the raised ends of the U
SMILE_LOW = Box(u=(-0.25, 0.25), v=(0.72, 0.84))  # the bottom of the U
NEUTRAL_LINE = Box(u=(-0.20, 0.20), v=(0.49, 0.57))  # the straight mouth
HAIR_PATCH = Box(u=(-0.40, 0.40), v=(-1.00, -0.70))
EYE_WINDOW = (0.33, 0.20)  # half-width (in a) and half-height (in b) around each eye centre

# Thresholds: midpoints of the gap between the two classes' scores on 4,000 clean renders
# (seed 1234; score_ranges() prints them). Measured gaps (class-0 max, class-1 min):
#   mustache (0.026, 0.498) -> 0.26;  glasses (0.066, 0.663) -> 0.36;
#   smile (-0.599, 0.733) -> 0.07;    eye_shape, without glasses (0.301, 0.395) -> 0.35.
THRESHOLDS = {"mustache": 0.26, "glasses": 0.36, "smile": 0.07, "eye_shape": 0.35}
UNKNOWN = -1  # eye_shape reading when glasses hide the eyes
MIN_FIT = 0.75  # face_found needs this silhouette IoU (clean renders: >= 0.86, median 0.97)


@dataclass
class Readings:
    """What the oracle read from N images (arrays of length N)."""

    mustache: np.ndarray  # (N,) int8, 1 = yes
    glasses: np.ndarray  # (N,) int8
    smile: np.ndarray  # (N,) int8
    hair: np.ndarray  # (N,) int8, index into ATTRIBUTES["hair"]
    eye_shape: np.ndarray  # (N,) int8, index into EYE_SHAPES, UNKNOWN (-1) under glasses
    face_found: np.ndarray  # (N,) bool: a plausible face silhouette was found
    face_fit: np.ndarray  # (N,) IoU of the foreground with the ideal silhouette at the found box
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

    @property
    def skin(self) -> np.ndarray:
        """(N,) int8, 1 = dark skin (tone read above :data:`~caso_cli.toyworld.render.DARK_SKIN`): the Dark_skin
        label."""
        return (self.skin_tone > R.DARK_SKIN).astype(np.int8)

    @property
    def eyes(self) -> np.ndarray:
        """(N,) int8, 1 = narrow eyes (the Narrow_eyes label), UNKNOWN (-1) under glasses."""
        return self.eye_shape

    def labels(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in R.ATTRIBUTES}

    def to_dicts(self) -> list[dict[str, object]]:
        """One JSON-ready dict per image: class names, then nuisance readings and raw scores."""
        out = []
        for i in range(len(self)):
            d: dict[str, object] = {name: R.ATTRIBUTES[name][int(getattr(self, name)[i])]
                                    for name in R.ATTRIBUTES}
            d.update(
                eye_shape=R.EYE_SHAPES[int(self.eye_shape[i])] if self.eye_shape[i] >= 0 else "unknown",
                face_found=bool(self.face_found[i]),
                face_fit=_r(self.face_fit[i], 3),
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


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)


# ---- image helpers ----------------------------------------------------------------------------

def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge replication over axes 1, 2 of (N, H, W, C)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += p[:, i:i + h, j:j + w]
    return out / np.float32(9.0)


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


def _box_mask(uu: np.ndarray, vv: np.ndarray, box: Box) -> np.ndarray:
    """(G, G) boolean mask of the grid points inside ``box``."""
    su = np.abs(uu) if box.mirror else uu
    return np.asarray((su >= box.u[0]) & (su <= box.u[1]) & (vv >= box.v[0]) & (vv <= box.v[1]))


def _region_mean(m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of (N, G, G) values over a (G, G) boolean mask."""
    return m[:, mask].mean(axis=1)


# ---- the oracle -------------------------------------------------------------------------------

def _morph(m: np.ndarray, op: np.ufunc) -> np.ndarray:
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
                  region: Box) -> np.ndarray:
    """Median colour (N, 3) of a face-coordinate region, sampled on a coarse grid."""
    t = np.linspace(-GRID_EXTENT, GRID_EXTENT, 27, dtype=np.float32)
    uu, vv = np.meshgrid(t, t, indexing="xy")
    face = _sample(x, cx[:, None] + t[None] * a[:, None], cy[:, None] + t[None] * b[:, None])
    return np.median(face[:, _box_mask(uu, vv, region)], axis=1)


@dataclass
class FaceBox:
    """Where the face is, from pixels (arrays of length N, 32-px units)."""

    background: np.ndarray  # (N, 3) RGB
    cx: np.ndarray
    cy: np.ndarray
    a: np.ndarray  # half width
    b: np.ndarray  # half height
    fit: np.ndarray  # IoU of the foreground coverage with the ideal silhouette at this box
    found: np.ndarray  # bool: size, position and fit plausible


def _silhouette(cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, H, W) coverage of the ideal face+hair silhouette, 2x2 supersampled."""
    off = np.array([0.25, 0.75], dtype=np.float32)
    ys = (np.arange(h, dtype=np.float32)[:, None] + off).reshape(-1)
    xs = (np.arange(w, dtype=np.float32)[:, None] + off).reshape(-1)
    u = (xs[None, None, :] - cx[:, None, None]) / a[:, None, None]
    v = (ys[None, :, None] - cy[:, None, None]) / b[:, None, None]
    inside = (u**2 + v**2 <= 1.0) | (
        ((u / R.HAIR_OUTER[0]) ** 2 + (v / R.HAIR_OUTER[1]) ** 2 <= 1.0) & (v < R.HAIRLINE_V))
    return inside.reshape(-1, h, 2, w, 2).mean(axis=(2, 4), dtype=np.float32)


def locate_face(images: np.ndarray) -> FaceBox:
    """Background colour and face box of (N, H, W, 3) images, from pixels only.

    Pass 1 thresholds a smoothed distance-to-background map (robust to noise, but it counts
    every mixed edge pixel as face, so the box comes out ~0.7 px too big). Pass 2 measures the
    coverage of each edge pixel: an edge pixel is a mix ``alpha * c + (1 - alpha) * bg`` of
    the background and one of skin / hair / frame / mouth colour ``c`` (skin and hair read
    with the pass-1 box), so ``alpha`` is its projection on ``c - bg``. Core pixels count 1,
    far pixels 0; the area and centroid of this coverage map give an unbiased box.
    """
    x = np.asarray(images, dtype=np.float32)
    h, w = x.shape[1:3]
    bg = np.median(_border(x), axis=1)
    diff = x - bg[:, None, None, :]
    dist_s = np.linalg.norm(_box3(x) - bg[:, None, None, :], axis=-1)
    f = np.clip((dist_s - FG_DIST[0]) / (FG_DIST[1] - FG_DIST[0]), 0.0, 1.0)
    cx, cy, a, b = _box_from_moments(*_moments(f))

    # pass 2: the coverage of pixels near the silhouette edge
    skin = _patch_colour(x, cx, cy, a, b, CHEEKS)
    hair = _patch_colour(x, cx, cy, a, b, HAIR_PATCH)
    fixed = [np.broadcast_to(c, skin.shape) for c in (R.GLASSES_RGB, R.MOUTH_RGB)]
    dirs = np.stack([skin, hair, *fixed], axis=1) - bg[:, None, :]  # (N, K, 3)
    d2 = np.maximum((dirs**2).sum(-1), 1.0)  # (N, K)
    proj = (diff.reshape(len(x), h * w, 3) @ dirs.transpose(0, 2, 1)).reshape(len(x), h, w, -1)  # (N,H,W,K)
    cos = proj / np.sqrt(d2)[:, None, None, :] / np.maximum(np.linalg.norm(diff, axis=-1), 1e-3)[..., None]
    best = cos.argmax(axis=-1)[..., None]  # the colour this pixel mixes with the background
    alpha = np.take_along_axis(proj / d2[:, None, None, :], best, axis=-1)[..., 0]
    alpha = np.clip(alpha, -0.5, 1.5)  # unclipped near 0, so noise on the background averages out
    fg = dist_s > 0.5 * (FG_DIST[0] + FG_DIST[1])
    core = _morph(_morph(fg, np.logical_and), np.logical_and)  # >= 2 px inside: fully face
    band = _morph(_morph(fg, np.logical_or), np.logical_or) & ~core
    cover = np.where(core, 1.0, np.where(band, alpha, 0.0)).astype(np.float32)
    cx, cy, a, b = _box_from_moments(*_moments(cover))

    ideal = _silhouette(cx, cy, a, b, h, w)
    # IoU of the half-covered pixels: a blur moves few pixels across the 0.5 level
    mine, want = cover > 0.5, ideal > 0.5
    fit = (mine & want).sum(axis=(1, 2)) / np.maximum((mine | want).sum(axis=(1, 2)), 1)
    # plausible: size near the renderer's range, centre not far off, silhouette of the right shape
    found = ((a > 5.5) & (a < 11.5) & (np.abs(cx - w / 2) < 5) & (np.abs(cy - h / 2) < 6)
             & (fit > MIN_FIT))
    return FaceBox(bg, cx, cy, a, b, fit, found)


def read_attributes(images: np.ndarray) -> Readings:
    """Read attributes and nuisance values of (N, 32, 32, 3) uint8 toy faces from their pixels."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (R.IMAGE_SIZE, R.IMAGE_SIZE, 3):
        raise ValueError(f"expected (N, {R.IMAGE_SIZE}, {R.IMAGE_SIZE}, 3) images, got {x.shape}")
    n = x.shape[0]
    if n == 0:
        return _empty()
    x = x.astype(np.float32)
    box = locate_face(x)
    a, b = box.a, box.b

    # resample in face coordinates: rows are v, columns are u
    t = np.linspace(-GRID_EXTENT, GRID_EXTENT, GRID, dtype=np.float32)
    uu, vv = np.meshgrid(t, t, indexing="xy")
    face = _sample(x, box.cx[:, None] + t[None] * a[:, None], box.cy[:, None] + t[None] * b[:, None])

    skin = np.median(face[:, _box_mask(uu, vv, CHEEKS)], axis=1)  # (N, 3)
    dark = 1.0 - _luma(face) / np.maximum(_luma(skin), 1.0)[:, None, None]

    s_mustache = _region_mean(dark, _box_mask(uu, vv, MUSTACHE_REGION))

    # glasses: annuli in pixel-round units (v scaled by b / a, like the renderer's circles)
    ring = np.zeros_like(uu, dtype=bool)
    for side in (-1.0, 1.0):
        r = np.sqrt((uu - side * R.EYE_U) ** 2 + ((vv - R.EYE_V) * R.FACE_ASPECT) ** 2)
        ring |= (r >= GLASSES_RING[0]) & (r <= GLASSES_RING[1])
    s_glasses = _region_mean(dark, ring)

    # smile: dark where only a smile is drawn vs where only the neutral line is, divided by
    # their sum so the mouth's contrast with the skin (lower on dark skin) cancels: ~+0.7 / -0.7
    smile_only = 0.5 * (_region_mean(dark, _box_mask(uu, vv, SMILE_CORNERS))
                        + _region_mean(dark, _box_mask(uu, vv, SMILE_LOW)))
    line_only = _region_mean(dark, _box_mask(uu, vv, NEUTRAL_LINE))
    s_smile = (smile_only - line_only) / (np.abs(smile_only) + np.abs(line_only) + 0.1)

    hair_rgb = face[:, _box_mask(uu, vv, HAIR_PATCH)].mean(axis=1)
    hair_dist = np.linalg.norm(hair_rgb[:, None, :] - R.HAIR_RGB[None], axis=-1)  # (N, 3)

    # eye shape (read without glasses only): horizontal minus vertical variance (px**2) of the
    # darkness in a window around each eye. An isotropic blur adds the same to both, so the
    # difference survives blur better than a ratio would: ~0 for round eyes, ~0.8 for narrow.
    s_eye = np.zeros(n, dtype=np.float32)
    for side in (-1.0, 1.0):
        du, dv = uu - side * R.EYE_U, vv - R.EYE_V
        win = (np.abs(du) <= EYE_WINDOW[0]) & (np.abs(dv) <= EYE_WINDOW[1])
        wgt = np.clip(dark[:, win], 0.0, None)
        tot = np.maximum(wgt.sum(axis=1), 1e-6)
        var_u = (wgt * du[win] ** 2).sum(axis=1) / tot * a**2
        var_v = (wgt * dv[win] ** 2).sum(axis=1) / tot * b**2
        s_eye += 0.5 * (var_u - var_v)

    glasses = (s_glasses > THRESHOLDS["glasses"]).astype(np.int8)
    eye_shape = np.where(glasses == 1, UNKNOWN, s_eye > THRESHOLDS["eye_shape"]).astype(np.int8)
    span = R.SKIN_DARK - R.SKIN_LIGHT
    tone = ((skin - R.SKIN_LIGHT) @ span) / float(span @ span)
    return Readings(
        mustache=(s_mustache > THRESHOLDS["mustache"]).astype(np.int8),
        glasses=glasses,
        smile=(s_smile > THRESHOLDS["smile"]).astype(np.int8),
        hair=hair_dist.argmin(axis=1).astype(np.int8),
        eye_shape=eye_shape,
        face_found=box.found,
        face_fit=box.fit,
        cx=box.cx, cy=box.cy, face_w=a, face_h=b,
        skin_rgb=skin, skin_tone=tone, background=box.background,
        scores={"mustache": s_mustache, "glasses": s_glasses, "smile": s_smile,
                "eye_shape": s_eye, "hair_dist": hair_dist},
    )


def _empty() -> Readings:
    z = np.zeros(0, dtype=np.int8)
    f = np.zeros(0, dtype=np.float32)
    rgb = np.zeros((0, 3), np.float32)
    return Readings(z, z, z, z, z, np.zeros(0, bool), f, f, f, f, f, rgb, f, rgb, {})


def agreement(readings: Readings, params: R.FaceParams, include_nuisance: bool = False) -> dict[str, float]:
    """Fraction of faces where the reading equals the label, per attribute (and ``"all"``).

    With ``include_nuisance`` also ``eye_shape`` (on faces without glasses; the oracle does
    not read eye shape through glasses) and the mean absolute errors ``cx_mae``,
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
        visible = params.glasses == 0  # the oracle reads eye shape only without glasses
        out["eye_shape"] = float((readings.eye_shape == params.eye_shape)[visible].mean())
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
        if name == "eye_shape":  # read only without glasses
            s, y = s[params.glasses == 0], y[params.glasses == 0]
        out[name] = (float(s[y == 0].min()), float(s[y == 0].max()),
                     float(s[y == 1].min()), float(s[y == 1].max()))
    return out


# ---- ``caso eval --oracle toy`` ------------------------------------------------------------


def eval_read(images: list[np.ndarray], paths: Sequence[object]) -> list[dict[str, str]]:
    """Readings of uint8 (32, 32, 3) toy faces for ``caso eval``: class names of each attribute and ``face_found``
    (as strings); an image of another size is an :class:`caso_cli.errors.InputError` naming its path."""
    from caso_cli.errors import InputError

    for im, p in zip(images, paths, strict=True):
        if im.shape != (R.IMAGE_SIZE, R.IMAGE_SIZE, 3):
            raise InputError(f"{p}: --oracle toy reads {R.IMAGE_SIZE}x{R.IMAGE_SIZE} toy faces, this image is "
                             f"{im.shape[1]}x{im.shape[0]}")
    rows = read_attributes(np.stack(images)).to_dicts()
    return [{k: str(r[k]) for k in (*R.ATTRIBUTES, "face_found")} for r in rows]


def _face_found_rate(edits: list[dict[str, str]]) -> dict[str, float]:
    return {"edit_face_found": round(sum(r["face_found"] == "True" for r in edits) / len(edits), 4)}


def eval_oracle() -> Oracle:
    """The toy world's pixel oracle as a :class:`caso_cli.eval.oracles.Oracle` (registered as ``toy``)."""
    from caso_cli.eval.oracles import Oracle

    return Oracle(name="toy", attributes=R.ATTRIBUTES, read=eval_read, extra=_face_found_rate)
