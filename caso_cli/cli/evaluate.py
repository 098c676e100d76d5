"""``caso eval``: compare edited images with their originals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.options import JsonOpt
from caso_cli.cli.output import Progress, info, plural, print_json


def eval_cmd(
    orig: Annotated[Path, typer.Argument(help="Original image, or a folder of them.", show_default=False)],
    edit: Annotated[Path, typer.Argument(help="Edited image, or a folder of them (caso edit's --out).",
                                         show_default=False)],
    pairs: Annotated[Path | None, typer.Option("--pairs", help="CSV with columns orig,edit (paths relative to "
                                                                "ORIG and EDIT) instead of pairing by name.")] = None,
    classifier: Annotated[str | None, typer.Option("--classifier", help="Classifier file: class rates of "
                                                   "originals and edits, feature distances, the report's plot.")]
    = None,
    target: Annotated[str | None, typer.Option("--target", help="Class the edits should land in: success is the "
                                               "share of edits the classifier puts there.")] = None,
    oracle: Annotated[str | None, typer.Option("--oracle", help="A registered oracle's per-attribute change rates; "
                                               "'toy': the toy world's pixel oracle (32x32 toy faces).")] = None,
    weights: Annotated[list[str] | None, typer.Option("--weights", help="A weight file, a folder of them, or a hub "
                                                      "id already in your cache (repeatable; never downloaded): "
                                                      "VGG16 + LPIPS heads give LPIPS, FID's InceptionV3 gives "
                                                      "FID/KID/IS. See docs/eval.md.")] = None,
    fit: Annotated[str, typer.Option("--fit", help="How an original is brought to its edit's size when they "
                                     "differ: crop, pad or stretch.")] = "crop",
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")]
    = None,
    fail_under: Annotated[list[str] | None, typer.Option("--fail-under", help="METRIC=VALUE: exit 1 when the "
                                                         "metric is below VALUE or unavailable (repeatable; "
                                                         "metrics where higher is better).")]
    = None,
    fail_over: Annotated[list[str] | None, typer.Option("--fail-over", help="METRIC=VALUE: exit 1 when the "
                                                       "metric is above VALUE or unavailable (repeatable; lpips, "
                                                       "fid, kid, classifier_fd, classifier_kid: lower is "
                                                       "better).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per classifier pass.")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Measure edits against their originals: PSNR, SSIM, classifier success, toy oracle, feature distances.

    Edits pair with originals by file name: <stem>[.<anything>].<ext> pairs with <stem>.<ext>,
    so caso edit's <stem>.<attr>.<scale>.png finds its input. Metrics that need backbone weights
    (LPIPS, FID, KID, Inception Score) are computed from weight files you already have (--weights);
    without them they are reported as unavailable, with the reason. Nothing is downloaded.

    Examples:

      caso eval caso-demo/inputs caso-demo/edits --oracle toy --report report.html

      caso eval photos/ edited/ --classifier smile.safetensors --target smile --fail-under classifier.success=0.8

      caso eval photos/ edited/ --weights ~/.cache/torch/hub/checkpoints --weights vgg.pth --fail-over lpips=0.2
    """
    from caso_cli.config import EvalConfig
    from caso_cli.errors import CheckFailed, UsageError
    from caso_cli.eval.evaluate import check_config, evaluate, missed_thresholds, parse_threshold
    from caso_cli.eval.pairing import pair_by_name, pair_from_csv
    from caso_cli.io.images import FIT_MODES

    if fit not in FIT_MODES:
        raise UsageError(f"--fit must be one of {', '.join(FIT_MODES)}, not {fit!r}")
    thresholds = [parse_threshold(t) for t in fail_under or []]
    ceilings = [parse_threshold(t, over=True) for t in fail_over or []]
    config = EvalConfig(classifier=classifier, target=target, oracle=oracle, weights=tuple(weights or ()), fit=fit,
                        batch_size=batch_size)
    check_config(config)
    pairing = pair_from_csv(pairs, orig, edit) if pairs is not None else pair_by_name(orig, edit)
    with Progress("eval", len(pairing.pairs)) as bar:
        result = evaluate(pairing, config, progress=lambda done, _total: bar.update(done))
    if report is not None:
        from caso_cli.eval.report import write_report

        write_report(result, report)
        info(f"report written to {report}")
    if json_out:
        print_json(result.summary())
    else:
        _print_table(result.metrics, len(result.pairs))
    missed = [f"--fail-under missed: {m}" for m in missed_thresholds(result.metrics, thresholds)]
    missed += [f"--fail-over missed: {m}" for m in missed_thresholds(result.metrics, ceilings, over=True)]
    if missed:
        raise CheckFailed("; ".join(missed))


def _print_table(metrics: dict[str, dict[str, object]], n_pairs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from caso_cli.eval.evaluate import flat_metrics

    table = Table(title=f"caso eval: {plural(n_pairs, 'pair')}", show_lines=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    flat = flat_metrics(metrics)
    for name, entry in metrics.items():
        if not entry.get("available"):
            table.add_row(name, f"unavailable: {entry.get('reason', '')}")
            continue
        targets = dict(_targets(name, entry))  # what each success rate counts (--target or inferred)
        for key, value in flat.items():
            if key.startswith(name + ".") and key != name:
                target = targets.pop(key.rsplit(".", 1)[0] + ".target", None) if key.endswith(".success") else None
                if target is not None:
                    table.add_row(key.rsplit(".", 1)[0] + ".target", target)
                table.add_row(key, f"{value:.4g}")
    Console(soft_wrap=False, width=120).print(table)


def _targets(prefix: str, entry: dict[str, object]) -> list[tuple[str, str]]:
    """The ``target`` words of a metric and of its edit groups, by dotted name."""
    out = [(f"{prefix}.target", str(entry["target"]))] if isinstance(entry.get("target"), str) else []
    for key, value in entry.items():
        if isinstance(value, dict):
            out += _targets(f"{prefix}.{key}", value)
    return out
