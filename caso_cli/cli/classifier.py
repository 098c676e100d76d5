"""``caso classifier``: fit the frozen attribute classifier that embeddings are learned from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.help import CasoTyper
from caso_cli.cli.options import DeviceOpt, DtypeOpt, JsonOpt, SeedOpt
from caso_cli.cli.output import Progress, info, print_fields, print_json

app = CasoTyper(help="Fit and inspect attribute classifiers.\n\nExamples:\n\n"
                     "  caso classifier fit pets/ --out species.safetensors\n\n"
                     "  caso classifier show species.safetensors", no_args_is_help=True)


@app.command("fit")
def fit_cmd(
    data: Annotated[Path, typer.Argument(help="Class folders (DATA/<class>/*.png), a path,label CSV, or the image "
                                              "folder of a --labels file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Classifier file to write (.safetensors).")],
    labels: Annotated[Path | None, typer.Option("--labels", help="CelebA-style list_attr file.")] = None,
    attr: Annotated[str | None, typer.Option(
        "--attr", help="With --labels: a column (binary), a comma list of one-hot columns, or their prefix "
                       "(Hair -> Hair_*).")] = None,
    partition: Annotated[Path | None, typer.Option("--partition", help="CelebA list_eval_partition file "
                                                                      "(0 train, 1 validation).")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="small-cnn; vgg16 (the paper's, needs caso[vgg]); or "
                                                            "hf:<hub id or folder> for a transformers image "
                                                            "classifier.")] = "small-cnn",
    mode: Annotated[str, typer.Option("--mode", help="finetune (all weights) or frozen (new head only).")] = "finetune",
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Input side in pixels [default: 32 small-cnn, the backbone's own]")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="At most this many epochs (early stopping).")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate [default: by backbone and mode]")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held out for validation.")] = 0.2,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop after this long.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Fit a classifier on labelled images; report validation accuracy.

    Examples:

      caso classifier fit faces/ --labels list_attr_celeba.txt --attr Mustache --out mustache.clf.safetensors

      caso classifier fit pets/ --out species.safetensors          (pets/cat, pets/dog, pets/wild)

      caso classifier fit toy/ --labels toy/list_attr_toy.txt --attr Hair --out hair.safetensors
    """
    from caso_cli.errors import InputError, UsageError
    from caso_cli.io.datasets import load_labelled
    from caso_cli.models.classifier import save_classifier
    from caso_cli.pipelines.classifier_fit import FitConfig, fit_classifier
    from caso_cli.runtime import make_runtime, pin_threads

    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists (use --overwrite)")
    from caso_cli.io.files import check_writable

    check_writable(out, "classifier")  # before fitting, not after
    if not 0 < val_fraction < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    data_set = load_labelled(data, labels, attr, partition)
    name = attr or data.name
    config = FitConfig(attr=name, backbone=backbone, mode=mode, input_size=input_size, epochs=epochs,
                       batch_size=batch_size, lr=lr, val_fraction=val_fraction, max_minutes=max_minutes, seed=seed)
    info(f"fitting {backbone} on {len(data_set)} images, classes "
         + ", ".join(f"{c} ({n})" for c, n in data_set.counts().items()))
    runtime = make_runtime(device, "fp32" if dtype == "auto" else dtype)
    pin_threads()  # the fitted weights depend on the CPU thread count (caso_cli.runtime.LEARN_THREADS)
    with Progress("fit", epochs) as bar:
        clf, report = fit_classifier(
            data_set, config, runtime,
            progress=lambda p: bar.update(p["epoch"], f"loss {p['loss']:.3f} val acc {p['val_accuracy']:.3f}"))
    save_classifier(clf, out)
    summary = {"classifier": str(out), "classes": clf.classes, **report.as_dict()}
    if json_out:
        print_json(summary)
    else:
        info(f"validation accuracy {report.val_accuracy:.4f} ({report.n_val} images), best epoch "
             f"{report.best_epoch}/{report.epochs_run}, {report.seconds:.1f} s")
        typer.echo(str(out))


@app.command("show")
def show_cmd(
    path: Annotated[Path, typer.Argument(help="A classifier file.")],
    json_out: JsonOpt = False,
) -> None:
    """Print a classifier file's metadata (classes, backbone, input size, accuracy).

    Examples:

      caso classifier show mustache.safetensors

      caso classifier show caso-demo/mustache.classifier.safetensors --json
    """
    import dataclasses

    from caso_cli.models.classifier import read_classifier_meta

    meta = dataclasses.asdict(read_classifier_meta(path))
    meta.pop("backbone_config", None)
    if json_out:
        print_json(meta)
    else:
        print_fields(meta)
