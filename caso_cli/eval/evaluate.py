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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caso_cli.config import EvalConfig
from caso_cli.errors import InputError, UsageError
from caso_cli.eval.backbone_metrics import BACKBONE_METRICS, BackboneMetrics, by_size
from caso_cli.eval.backbones import is_hub_id
from caso_cli.eval.metrics import summary, unavailable
from caso_cli.eval.pairing import EditGroup, Pairing, edit_group
from caso_cli.eval.targets import classifier_target, oracle_target

SCHEMA_VERSION = 1
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
        for idx, x in by_size(images):
            f = clf.features(x)
            p = torch.softmax(clf.backbone.head(f) if hasattr(clf.backbone, "head") else clf(x), dim=1)
            for j, i in enumerate(idx):
                feats[i], probs[i] = f[j].numpy(), p[j].numpy()
    order = range(len(images))
    return (np.stack([feats[i] for i in order]).astype(np.float64),
            np.stack([probs[i] for i in order]).astype(np.float64))


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
        why = unavailable("needs at least 2 pairs")
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
    nets = BackboneMetrics(config.weights)
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

    metrics: dict[str, dict[str, Any]] = {"psnr": summary([r.psnr for r in records]),
                                          "ssim": summary([r.ssim for r in records])}
    result = EvalResult(records, metrics, pairing.unpaired_originals, pairing.unpaired_edits, groups=groups)
    if clf is not None:
        result.classes = list(clf.classes)
        result.features_orig = np.concatenate([f for f, _ in feats])
        result.features_edit = np.concatenate([f for _, f in feats])
        metrics["classifier"] = _classifier_summary(config, result.classes, np.concatenate([p for p, _ in probs]),
                                                    np.concatenate([p for _, p in probs]), records, groups)
        metrics.update(_feature_distances(config, result.features_orig, result.features_edit))
    else:
        why = unavailable("no --classifier given")
        metrics.update(classifier=why, classifier_fd=why, classifier_kid=why)
    if oracle is not None:
        result.oracle_attributes = list(oracle.attributes)
        metrics["oracle"] = _oracle_summary(oracle, records, groups)
    else:
        metrics["oracle"] = unavailable("no --oracle given")
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
