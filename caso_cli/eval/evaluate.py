"""``caso eval``: measure edits against their originals (PSNR, SSIM, classifier, an oracle, feature distances).

Every metric is an entry of :attr:`EvalResult.metrics`: ``{"available": true, ...numbers}`` or
``{"available": false, "reason": "..."}``. Nothing is downloaded: metrics that need backbone
weights (LPIPS, FID, KID, Inception Score) are computed only from weight files the user gives
(:mod:`caso_cli.eval.backbones`), and distances computed on the classifier's features are named
``classifier_fd`` and ``classifier_kid``, never FID or KID. Oracles (``--oracle NAME``, e.g. the
toy world's ``toy``) are found by name through :func:`caso_cli.eval.oracles.get_oracle`.

Edits are grouped by the edit they come from (:func:`caso_cli.eval.pairing.edit_group`: embedding, class and scale,
read from the ``caso:*`` PNG chunks or the file name), and the classifier's and the oracle's numbers are also
given per group (``groups``), each with the group's own target: ``--target``, or, without it, the class the
edit moves towards (a positive scale) or away from (a negative one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caso_cli.config import EvalConfig
from caso_cli.errors import InputError, UsageError
from caso_cli.eval.backbones import is_hub_id
from caso_cli.eval.pairing import EditGroup, Pairing, edit_group

SCHEMA_VERSION = 1
BACKBONE_METRICS = ("lpips", "fid", "kid", "inception_score")
#: every metric an evaluation can report (available or not), so that --fail-under names are checked up front
METRICS = ("psnr", "ssim", "classifier", "classifier_fd", "classifier_kid", "oracle", *BACKBONE_METRICS)
#: metrics where lower is better: thresholds on them take --fail-over, the others --fail-under
LOWER_IS_BETTER = ("lpips", "fid", "kid", "classifier_fd", "classifier_kid")


@dataclass
class PairRecord:
    """Per-pair numbers."""

    orig: Path
    edit: Path
    psnr: float
    ssim: float
    fitted: bool  # the original was brought to the edit's size (EvalConfig.fit) before comparing
    lpips: float | None = None
    clf_orig: str | None = None  # classifier's class for the original
    clf_edit: str | None = None
    oracle_orig: dict[str, str] | None = None  # the oracle's reading: attribute -> class name
    oracle_edit: dict[str, str] | None = None
    group: str | None = None  # EditGroup.label of the edit

    def as_dict(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        d["psnr"], d["ssim"] = round(self.psnr, 4), round(self.ssim, 4)
        if self.lpips is not None:
            d["lpips"] = round(self.lpips, 4)
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class EvalResult:
    """What :func:`evaluate` measured."""

    pairs: list[PairRecord]
    metrics: dict[str, dict[str, Any]]
    unpaired_originals: list[Path] = field(default_factory=list)
    unpaired_edits: list[Path] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # classifier classes, when one was given
    features_orig: np.ndarray | None = None  # (N, D) classifier features, for the report's plot
    features_edit: np.ndarray | None = None
    oracle_attributes: list[str] = field(default_factory=list)  # the attributes the oracle reads, when one was given
    groups: dict[str, EditGroup] = field(default_factory=dict)  # label -> the edit a group of pairs comes from

    def summary(self) -> dict[str, Any]:
        """The JSON summary: metrics, counts, the edit groups, and one row per pair."""
        return {"schema_version": SCHEMA_VERSION, "n_pairs": len(self.pairs), "metrics": self.metrics,
                "groups": {label: {"n": sum(p.group == label for p in self.pairs), "from": g.source}
                           for label, g in self.groups.items()},
                "unpaired": {"originals": [str(p) for p in self.unpaired_originals],
                             "edits": [str(p) for p in self.unpaired_edits]},
                "pairs": [p.as_dict() for p in self.pairs]}


def check_config(config: EvalConfig) -> None:
    """Refuse inconsistent options before any image is read."""
    if config.target is not None and config.classifier is None:
        raise UsageError("--target needs --classifier")
    if config.oracle is not None:
        from caso_cli.eval.oracles import oracle_names

        if config.oracle not in oracle_names():
            raise UsageError(f"unknown --oracle {config.oracle!r} (known: {', '.join(oracle_names()) or 'none'})")
    if config.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    for spec in config.weights:
        if not Path(spec).expanduser().exists() and not is_hub_id(spec):
            raise UsageError(f"--weights {spec}: no such file or folder")


def _stats(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, np.float64)
    return {"available": True, "mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4),
            "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _by_size(images: list[np.ndarray]) -> list[tuple[list[int], Any]]:
    """Indices of the images of each size and those images as one (N, 3, H, W) tensor in [-1, 1]."""
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    return [(idx, torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).float() / 127.5 - 1)
            for idx in groups.values()]


class _Backbones:
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
            for idx, x in _by_size(a):
                if min(x.shape[-2:]) < 16:  # VGG16 halves the image four times before its last tap
                    raise InputError(f"LPIPS needs images of at least 16x16 pixels, got {x.shape[-1]}x{x.shape[-2]}")
                (_, y), = _by_size([b[i] for i in idx])  # each edit has its original's size (_load_pair)
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
            for idx, x in _by_size(images):  # resized to 299x299 inside, so any size goes
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
            return {name: _unavailable(why) for name in BACKBONE_METRICS}
        out: dict[str, dict[str, Any]] = {}
        if self.nets.lpips is None:
            out["lpips"] = _unavailable(self.nets.missing["lpips"])
        else:
            out["lpips"] = {**_stats(lpips_values), "weights": src["lpips"]}
        if self.nets.inception is None:
            unavailable = _unavailable(self.nets.missing["inception"])
            return {**out, "fid": unavailable, "kid": unavailable, "inception_score": unavailable}
        fo, fe = np.stack(self.pool_orig), np.stack(self.pool_edit)
        if len(fo) < 2:
            out["fid"] = out["kid"] = _unavailable("needs at least 2 pairs")
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


def _load_pair(orig: Path, edit: Path, fit: str) -> tuple[np.ndarray, np.ndarray, bool]:
    from caso_cli.io.images import fit_image, load_image

    a, b = load_image(orig), load_image(edit)
    fitted = a.size != b.size
    if fitted:
        a = fit_image(a, b.size, fit)
    return np.asarray(a, np.uint8), np.asarray(b, np.uint8), fitted


def _classify(clf: Any, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and softmax probabilities (N, K); images of one size go through in one batch."""
    import torch

    feats: dict[int, np.ndarray] = {}  # image index -> its features / class probabilities
    probs: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for idx, x in _by_size(images):
            f = clf.features(x)
            p = torch.softmax(clf.backbone.head(f) if hasattr(clf.backbone, "head") else clf(x), dim=1)
            for j, i in enumerate(idx):
                feats[i], probs[i] = f[j].numpy(), p[j].numpy()
    order = range(len(images))
    return (np.stack([feats[i] for i in order]).astype(np.float64),
            np.stack([probs[i] for i in order]).astype(np.float64))


def _matches(key: str, name: str) -> bool:
    """``key`` (a class or embedding name, lower case) names ``name``: ``mustache``, ``toy-mustache``."""
    return key == name or key.endswith("-" + name)


def _direction(group: EditGroup, found: Callable[[str | None, str], tuple[str, int] | None]
               ) -> tuple[str, int, bool] | None:
    """What ``found(class, embedding name)`` makes of the one attribute of ``group`` it knows, and whether the edit
    moves towards it (positive scale) or away (negative); ``None`` with no such attribute, several, or scale 0."""
    scales = group.scale_values()
    hits = [(i, hit) for i, (name, cls) in enumerate(zip(group.names, group.classes, strict=True))
            if (hit := found(cls, name)) is not None]
    if scales is None or len(hits) != 1 or scales[hits[0][0]] == 0:
        return None
    i, (what, k) = hits[0]
    return what, k, scales[i] > 0


def classifier_target(group: EditGroup, classes: Sequence[str]) -> tuple[str, int, bool] | None:
    """``(target, k, towards)`` of an edit group for a classifier of ``classes``: success is the share of edits in
    class k (towards) or out of it (away; the target is then the other class of a binary classifier, else
    ``not <class>``). The edited class is the group's recorded class, or one whose name the embedding's name ends
    with (``toy-mustache``, ``hair-blond``)."""
    def found(cls: str | None, name: str) -> tuple[str, int] | None:
        if cls is not None:
            return (cls, classes.index(cls)) if cls in classes else None
        ks = [k for k, c in enumerate(classes) if _matches(name.lower(), c.lower())]
        return (classes[ks[0]], ks[0]) if len(ks) == 1 else None

    d = _direction(group, found)
    if d is None:
        return None
    cls, k, towards = d
    return (cls if towards else classes[1 - k] if len(classes) == 2 else f"not {cls}"), k, towards


def oracle_target(group: EditGroup, attributes: Mapping[str, Sequence[str]]) -> tuple[str, str, bool] | None:
    """``(attribute, class, towards)`` of an edit group for an oracle reading ``attributes``: the class of the
    attribute the edit moves towards (positive scale) or away from (negative). A binary attribute ``a`` is named
    by the class or embedding ``a`` or ``<x>-a`` (its last class) or ``no_a`` (its first); any attribute by one of
    its classes that no other attribute has (``blond``, ``hair-blond``)."""
    def found(cls: str | None, name: str) -> tuple[str, int] | None:
        key = (cls or name).lower()
        hits = []
        for a, names in attributes.items():
            low = [c.lower() for c in names]
            if len(names) == 2 and _matches(key, a.lower()):
                hits.append((a, 1))
            elif len(names) == 2 and key in (f"no_{a}", f"not_{a}", f"no-{a}", f"non_{a}"):
                hits.append((a, 0))
            else:
                hits += [(a, k) for k, c in enumerate(low) if (key == c if cls else _matches(key, c))]
        return hits[0] if len(hits) == 1 else None

    d = _direction(group, found)
    return None if d is None else (d[0], attributes[d[0]][d[1]], d[2])


def _group_index(records: list[PairRecord]) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        out.setdefault(r.group or "ungrouped", []).append(i)
    return {label: np.asarray(idx) for label, idx in out.items()}


def _classifier_summary(config: EvalConfig, classes: list[str], p_orig: np.ndarray, p_edit: np.ndarray,
                        records: list[PairRecord], groups: dict[str, EditGroup]) -> dict[str, Any]:
    po, pe = p_orig.argmax(axis=1), p_edit.argmax(axis=1)
    out: dict[str, Any] = {"available": True, "file": config.classifier, "target": config.target,
                           "edit_classes": {c: round(float((pe == k).mean()), 4) for k, c in enumerate(classes)},
                           "original_classes": {c: round(float((po == k).mean()), 4) for k, c in enumerate(classes)}}
    if config.target is not None:
        k = classes.index(config.target)
        out["target_from"] = "--target"
        out["success"] = round(float((pe == k).mean()), 4)
        out["originals_rate"] = round(float((po == k).mean()), 4)
    rows: dict[str, dict[str, Any]] = {}
    for label, idx in _group_index(records).items():
        if config.target is not None:
            target, k, towards = config.target, classes.index(config.target), True
        else:
            found = classifier_target(groups[label], classes) if label in groups else None
            if found is None:
                rows[label] = {"n": len(idx), "target": None}
                continue
            target, k, towards = found
        rows[label] = {"n": len(idx), "target": target,
                       "success": round(float(((pe[idx] == k) == towards).mean()), 4),
                       "originals_rate": round(float(((po[idx] == k) == towards).mean()), 4)}
    out["groups"] = rows
    if config.target is None and len(rows) == 1 and next(iter(rows.values()))["target"] is not None:
        (row,) = rows.values()  # one edit, its own target: the success of the whole set
        out.update(target=row["target"], target_from="edits", success=row["success"],
                   originals_rate=row["originals_rate"])
    return out


def _oracle_summary(oracle: Any, records: list[PairRecord], groups: dict[str, EditGroup]) -> dict[str, Any]:
    """The oracle's summary of all pairs, and per edit group the share changed and, where the group's edit names
    an attribute the oracle reads, the share of edits read as its target class (``success``)."""
    out = oracle.summary([r.oracle_orig for r in records], [r.oracle_edit for r in records])
    rows: dict[str, dict[str, Any]] = {}
    for label, idx in _group_index(records).items():
        part = oracle.summary([records[i].oracle_orig for i in idx], [records[i].oracle_edit for i in idx])
        found = oracle_target(groups[label], oracle.attributes) if label in groups else None
        row: dict[str, Any] = {"n": len(idx), "target": None}
        if found is not None:
            attr, cls, towards = found
            names = oracle.attributes[attr]
            target = cls if towards else names[1 - list(names).index(cls)] if len(names) == 2 else f"not {cls}"
            hits = [(records[i].oracle_edit[attr] == cls) == towards for i in idx]
            row.update(target=f"{attr}: {target}", success=round(sum(hits) / len(hits), 4))
        rows[label] = {**row, "changed": part["changed"]}
    out["groups"] = rows
    if len(rows) == 1 and next(iter(rows.values()))["target"] is not None:
        (row,) = rows.values()
        out.update(target=row["target"], success=row["success"])
    return out


def _feature_distances(config: EvalConfig, fo: np.ndarray, fe: np.ndarray) -> dict[str, dict[str, Any]]:
    from caso_cli.eval import metrics as M
    label = "penultimate features of --classifier (not Inception features: not comparable with FID/KID)"
    if len(fo) < 2:
        why = _unavailable("needs at least 2 pairs")
        return {"classifier_fd": why, "classifier_kid": why}
    mean, std = M.kid(fo, fe, config.kid_subsets, config.kid_subset_size, config.seed)
    return {"classifier_fd": {"available": True, "value": round(M.feature_frechet_distance(fo, fe), 6),
                              "features": label},
            "classifier_kid": {"available": True, "mean": round(mean, 6), "std": round(std, 6), "features": label}}


def evaluate(pairing: Pairing, config: EvalConfig,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Measure every (original, edit) pair of ``pairing``; ``progress(done, total)`` after each batch."""
    from caso_cli.eval import metrics as M
    check_config(config)
    oracle = None
    if config.oracle is not None:
        from caso_cli.eval.oracles import get_oracle

        oracle = get_oracle(config.oracle)
    clf = None
    if config.classifier is not None:
        from caso_cli.models.classifier import load_classifier

        clf = load_classifier(config.classifier)
        if config.target is not None and config.target not in clf.classes:
            raise UsageError(f"--target {config.target!r} is not a class of {config.classifier} "
                             f"(classes: {', '.join(clf.classes)})")
    nets = _Backbones(config.weights)
    records: list[PairRecord] = []
    feats: list[tuple[np.ndarray, np.ndarray]] = []
    probs: list[tuple[np.ndarray, np.ndarray]] = []
    total = len(pairing.pairs)
    labels = []  # each pair's edit group
    groups: dict[str, EditGroup] = {}
    for o, e in pairing.pairs:
        g = edit_group(o, e)
        labels.append(groups.setdefault(g.label, g).label)
    for start in range(0, total, config.batch_size):
        chunk = pairing.pairs[start:start + config.batch_size]
        loaded = [_load_pair(o, e, config.fit) for o, e in chunk]
        for (o, e), (a, b, fitted) in zip(chunk, loaded, strict=True):
            try:
                s = M.ssim(a, b)
            except ValueError as exc:
                raise InputError(f"{e}: {exc}") from exc
            records.append(PairRecord(o, e, M.psnr(a[None], b[None]), s, fitted, group=labels[len(records)]))
        batch = records[start:]
        lp = nets.lpips([a for a, _, _ in loaded], [b for _, b, _ in loaded])
        if lp is not None:
            for r, v in zip(batch, lp, strict=True):
                r.lpips = v
        nets.add([a for a, _, _ in loaded], [b for _, b, _ in loaded])
        if clf is not None:
            fo, po = _classify(clf, [a for a, _, _ in loaded])
            fe, pe = _classify(clf, [b for _, b, _ in loaded])
            feats.append((fo, fe))
            probs.append((po, pe))
            for r, i, j in zip(batch, po.argmax(1), pe.argmax(1), strict=True):
                r.clf_orig, r.clf_edit = clf.classes[i], clf.classes[j]
        if oracle is not None:
            ro = oracle.read([a for a, _, _ in loaded], [o for o, _ in chunk])
            re_ = oracle.read([b for _, b, _ in loaded], [e for _, e in chunk])
            for r, x, y in zip(batch, ro, re_, strict=True):
                r.oracle_orig, r.oracle_edit = x, y
        if progress is not None:
            progress(len(records), total)

    metrics: dict[str, dict[str, Any]] = {"psnr": _stats([r.psnr for r in records]),
                                          "ssim": _stats([r.ssim for r in records])}
    result = EvalResult(records, metrics, pairing.unpaired_originals, pairing.unpaired_edits, groups=groups)
    if clf is not None:
        result.classes = list(clf.classes)
        result.features_orig = np.concatenate([f for f, _ in feats])
        result.features_edit = np.concatenate([f for _, f in feats])
        metrics["classifier"] = _classifier_summary(config, result.classes, np.concatenate([p for p, _ in probs]),
                                                    np.concatenate([p for _, p in probs]), records, groups)
        metrics.update(_feature_distances(config, result.features_orig, result.features_edit))
    else:
        why = _unavailable("no --classifier given")
        metrics.update(classifier=why, classifier_fd=why, classifier_kid=why)
    if oracle is not None:
        result.oracle_attributes = list(oracle.attributes)
        metrics["oracle"] = _oracle_summary(oracle, records, groups)
    else:
        metrics["oracle"] = _unavailable("no --oracle given")
    metrics.update(nets.metrics(config, [r.lpips for r in records if r.lpips is not None]))
    return result


# ---- thresholds (--fail-under) ---------------------------------------------------------------


def flat_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every number of the available metrics by dotted name (``classifier.success``,
    ``oracle.changed.smile``); ``<name>.mean`` and ``<name>.value`` are also ``<name>``."""
    out: dict[str, float] = {}

    def walk(prefix: str, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}.{k}", v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}.{k}"] = float(v)
                if k in ("mean", "value") and prefix.count(".") == 0:
                    out[prefix] = float(v)

    for name, entry in metrics.items():
        if entry.get("available"):
            walk(name, entry)
    return out


def parse_threshold(text: str, over: bool = False) -> tuple[str, float]:
    """``"psnr=30"`` -> ``("psnr", 30.0)``: a ``--fail-under`` threshold, or with ``over`` a ``--fail-over`` one;
    a metric whose better direction is the other one is a usage error that names the right option."""
    option = "--fail-over" if over else "--fail-under"
    name, sep, value = text.rpartition("=")  # a group's name has one too: oracle.groups.smile=5.success=0.8
    try:
        if not sep or not name.strip():
            raise ValueError
        threshold = name.strip(), float(value)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: expected METRIC=NUMBER, e.g. "
                         f"{'lpips=0.2' if over else 'psnr=30'}") from exc
    root = threshold[0].split(".")[0]
    if root not in METRICS:
        raise UsageError(f"{option}: unknown metric {threshold[0]!r} (metrics: {', '.join(METRICS)})")
    if over != (root in LOWER_IS_BETTER):
        better, right = ("higher", "--fail-under") if over else ("lower", "--fail-over")
        raise UsageError(f"{option} {text}: {better} {root} is better, so a threshold on it is {right} "
                         f"{threshold[0]}={value}")
    return threshold


def missed_thresholds(metrics: dict[str, dict[str, Any]], thresholds: list[tuple[str, float]],
                      over: bool = False) -> list[str]:
    """One message per threshold missed (value below it, or above it with ``over``; or the metric unavailable)."""
    flat = flat_metrics(metrics)
    missed = []
    for name, want in thresholds:
        root = name.split(".")[0]
        if name in flat:
            if flat[name] > want if over else flat[name] < want:
                missed.append(f"{name} {flat[name]:g} {'>' if over else '<'} {want:g}")
        elif root in metrics and not metrics[root].get("available"):
            missed.append(f"{name} unavailable ({metrics[root]['reason']})")
        else:
            known = ", ".join(sorted(flat))
            raise UsageError(f"{'--fail-over' if over else '--fail-under'}: unknown metric {name!r} (available: "
                             f"{known})")
    return missed
