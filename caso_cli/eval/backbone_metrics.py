"""LPIPS, FID, KID and Inception Score of ``caso eval`` from the user's own backbone weights
(:mod:`caso_cli.eval.backbones`): LPIPS per pair, Inception outputs of both sets gathered batch by batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from caso_cli.config import EvalConfig
from caso_cli.errors import InputError
from caso_cli.eval.metrics import summary, unavailable

BACKBONE_METRICS = ("lpips", "fid", "kid", "inception_score")


def by_size(images: list[np.ndarray]) -> list[tuple[list[int], Any]]:
    """Indices of the images of each size and those images as one (N, 3, H, W) tensor in [-1, 1]."""
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    return [(idx, torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).float() / 127.5 - 1)
            for idx in groups.values()]


class BackboneMetrics:
    """The user's LPIPS and Inception networks: LPIPS per pair, Inception outputs of both sets batch by batch."""

    def __init__(self, specs: tuple[str, ...]) -> None:
        from caso_cli.eval.backbones import Backbones, load_backbones

        self.nets = load_backbones(specs) if specs else Backbones()
        self.pool_orig: list[np.ndarray] = []
        self.pool_edit: list[np.ndarray] = []
        self.probs_edit: list[np.ndarray] = []

    def lpips(self, a: list[np.ndarray], b: list[np.ndarray]) -> list[float] | None:
        import torch

        if self.nets.lpips is None:
            return None
        out = [0.0] * len(a)
        with torch.no_grad():
            for idx, x in by_size(a):
                if min(x.shape[-2:]) < 16:  # VGG16 halves the image four times before its last tap
                    raise InputError(f"LPIPS needs images of at least 16x16 pixels, got {x.shape[-1]}x{x.shape[-2]}")
                (_, y), = by_size([b[i] for i in idx])  # each edit has its original's size (_load_pair)
                for i, v in zip(idx, self.nets.lpips(x, y).tolist(), strict=True):
                    out[i] = v
        return out

    def _inception(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        net = self.nets.inception
        assert net is not None  # add() calls this only when Inception weights were found
        pool: dict[int, np.ndarray] = {}  # image index -> its features / class probabilities
        probs: dict[int, np.ndarray] = {}
        with torch.no_grad():
            for idx, x in by_size(images):  # resized to 299x299 inside, so any size goes
                p, logits = net(x)
                for j, i in enumerate(idx):
                    pool[i], probs[i] = p[j].double().numpy(), torch.softmax(logits[j].double(), 0).numpy()
        order = range(len(images))
        return np.stack([pool[i] for i in order]), np.stack([probs[i] for i in order])

    def add(self, a: list[np.ndarray], b: list[np.ndarray]) -> None:
        if self.nets.inception is None:
            return
        self.pool_orig.extend(self._inception(a)[0])
        pool, probs = self._inception(b)
        self.pool_edit.extend(pool)
        self.probs_edit.extend(probs)

    def metrics(self, config: EvalConfig, lpips_values: list[float]) -> dict[str, dict[str, Any]]:
        from caso_cli.eval import metrics as M
        src = self.nets.sources
        if not config.weights:
            why = "needs backbone weights you already have (--weights PATH); caso never downloads them"
            return {name: unavailable(why) for name in BACKBONE_METRICS}
        out: dict[str, dict[str, Any]] = {}
        if self.nets.lpips is None:
            out["lpips"] = unavailable(self.nets.missing["lpips"])
        else:
            out["lpips"] = {**summary(lpips_values), "weights": src["lpips"]}
        if self.nets.inception is None:
            no_inception = unavailable(self.nets.missing["inception"])
            return {**out, "fid": no_inception, "kid": no_inception, "inception_score": no_inception}
        fo, fe = np.stack(self.pool_orig), np.stack(self.pool_edit)
        if len(fo) < 2:
            out["fid"] = out["kid"] = unavailable("needs at least 2 pairs")
        else:
            note = f"originals vs edits, {len(fo)} images each: far too few for a stable estimate" \
                if len(fo) < 2048 else f"originals vs edits, {len(fo)} images each"
            mean, std = M.kid(fo, fe, config.kid_subsets, config.kid_subset_size, config.seed)
            out["fid"] = {"available": True, "value": round(M.feature_frechet_distance(fo, fe), 4), "note": note,
                          "weights": src["inception"]}
            out["kid"] = {"available": True, "mean": round(mean, 6), "std": round(std, 6), "weights": src["inception"]}
        score, spread = M.inception_score(np.stack(self.probs_edit), splits=min(10, len(self.probs_edit)))
        out["inception_score"] = {"available": True, "mean": round(score, 4), "std": round(spread, 4),
                                  "of": "edits", "weights": src["inception"]}
        return out
