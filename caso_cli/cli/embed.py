"""``caso embed learn``: learn embeddings from a classifier (the registry commands of ``caso embed`` are in
:mod:`caso_cli.cli.registry`; ``caso_cli.cli.app`` puts both under ``caso embed``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.help import CasoTyper
from caso_cli.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelConfigOpt,
    ModelOpt,
    SeedOpt,
    SizeOpt,
    parse_t_train,
)
from caso_cli.cli.output import Progress, info, plural, print_json
from caso_cli.config import LearnConfig

#: the help of the ``caso embed`` group, which holds learn and the registry commands
HELP = ("Learn embeddings from a classifier and manage the local registry.\n\n"
        "Examples:\n\n  caso embed learn faces/ --classifier mustache.safetensors --name mustache\n\n"
        "  caso embed list")
app = CasoTyper()


@app.command("learn")
def learn_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Folder of training images (searched recursively) or a CSV with a "
                                              "path column. Labels are not needed: the classifier teaches.")],
    classifier: Annotated[list[Path], typer.Option("--classifier", "-c", help="Classifier file from `caso "
                                                                               "classifier fit`. Repeat it (with "
                                                                               "one --name each) to learn several "
                                                                               "attributes together.")],
    name: Annotated[list[str], typer.Option("--name", "-n", help="Registry name for the embedding (one per "
                                                                 "--classifier, in the same order).")],
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    t_train: Annotated[str, typer.Option("--t-train", help="Training timestep t*, a range LOW:HIGH to draw it from "
                                                           "at every step, or auto: a short run at each of "
                                                           "201, 401, 601 and 201:601, scored by the generation "
                                                           "check, and the best kept (attributes learned "
                                                           "together, or --check-samples 0: 201).")] = "auto",
    train_scale: Annotated[float, typer.Option("--train-scale", help="Guidance scale w in the loss.")] =
    LearnConfig.train_scale,
    lambda_rec: Annotated[float, typer.Option("--lambda-rec", help="Weight of the latent reconstruction term.")] =
    LearnConfig.lambda_rec,
    lambda_keep: Annotated[float, typer.Option("--lambda-keep", help="Weight of the keep term: guidance towards the "
                                                                     "class an image already has should not change "
                                                                     "it (not in the paper; docs/learning.md).")] =
    LearnConfig.lambda_keep,
    augment: Annotated[int, typer.Option("--augment", help="Shift the decoded estimate by up to this many pixels "
                                                           "and flip it at random before the classifier reads it "
                                                           "(not in the paper; docs/learning.md).")] =
    LearnConfig.augment,
    restarts: Annotated[int, typer.Option("--restarts", help="Learn again with the next seed, up to this many "
                                                             "times, while the generation check reads a class "
                                                             "below 90%; each class keeps its best vector (not for "
                                                             "attributes learned together: one run).")] =
    LearnConfig.restarts,
    check_samples: Annotated[int, typer.Option("--check-samples", help="Samples per class generated from noise "
                                                                       "after learning and read by the classifier "
                                                                       "(attributes learned together: training "
                                                                       "images edited towards each class with the "
                                                                       "others held; 0: no check).")] =
    LearnConfig.check_samples,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = LearnConfig.lr,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = LearnConfig.batch_size,
    steps: Annotated[int, typer.Option("--steps", help="Total steps, whatever the number of images.")] =
    LearnConfig.steps,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Passes over the images instead of --steps.")] =
    LearnConfig.epochs,
    init_word: Annotated[str | None, typer.Option("--init-word", help="Start each vector at this (single-token) "
                                                                      "word's embedding [default: random]")] =
    LearnConfig.init_word,
    contexts: Annotated[str, typer.Option("--contexts", help="Learn in context: the token sits in the slot of word "
                                                           "contexts (faces, animals, objects, toy, or a file of "
                                                           "lines like 'a photo of a face with {}') and is guided as "
                                                           "a difference from them (docs/method.md §10); whole: the "
                                                           "paper's whole prompt. auto: toy on the toy model (where "
                                                           "it was measured better: docs/results-toy-v1.md), "
                                                           "else whole.")] = "auto",
    placement: Annotated[str, typer.Option("--placement", help="In context: the slot's input token (token; a "
                                                               "textual-inversion vector) or a delta on its output "
                                                               "state (output).")] = LearnConfig.placement,
    max_norm: Annotated[float | None, typer.Option("--max-norm", help="Hold each vector's norm to at most this "
                                                                      "many mean word norms.")] = None,
    size: SizeOpt = None,
    max_images: Annotated[int | None, typer.Option("--max-images", help="Use at most this many images.")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")] =
    LearnConfig.checkpoint_every,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of the same --name.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing embedding of that name.")] = False,
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute UNet and VAE "
                                                     "activations in the backward pass: less memory, ~30% slower.")] =
    False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet (opt-in; the first steps pay "
                                                              "for compilation).")] = False,
    num_processes: Annotated[int, typer.Option("--num-processes", help="Learn data-parallel in N processes (one "
                                                                       "per GPU, or gloo on the CPU) by handing off "
                                                                       "to `accelerate launch`.")] = 1,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Learn one embedding vector per classifier class (CASO, docs/method.md §3).

    Several --classifier/--name pairs learn their attributes together: each training condition names every
    attribute, so each vector carries only its own (the vectors caso edit --hold needs).

    Examples:

      caso embed learn ffhq_sample/ --classifier mustache.safetensors --name mustache

      caso embed learn toy/images --classifier hair.safetensors --name hair --model toy --steps 300

      caso embed learn faces/ -c mustache.clf -n mustache -c smile.clf -n smile -c glasses.clf -n glasses

      caso embed learn faces/ -c mustache.clf -n mustache --contexts faces     (learn in context)

      accelerate launch -m caso_cli embed learn faces/ -c smile.safetensors -n smile   (one process per GPU)
    """
    import dataclasses

    from caso_cli.errors import UsageError
    from caso_cli.pipelines.embed import EmbedJob, auto_t_screen, check_job, learn_contexts, run_embed_job
    from caso_cli.runtime import is_main_process, launched_processes

    if len(classifier) != len(name):
        raise UsageError(f"give one --name per --classifier (got {len(classifier)} classifiers and {len(name)} "
                         "names)")
    together = tuple(zip(name[1:], classifier[1:], strict=True))
    t_low, t_high = parse_t_train(t_train)
    screen = auto_t_screen(check_samples, bool(together)) if t_low < 0 else ()
    t_low = LearnConfig.t_train if t_low < 0 else t_low
    config = LearnConfig(t_train=t_low, t_train_max=t_high, t_screen=screen, train_scale=train_scale,
                         lambda_rec=lambda_rec, lambda_keep=lambda_keep, augment=augment, lr=lr,
                         batch_size=batch_size, steps=steps,
                         epochs=epochs, init_word=init_word, seed=seed, checkpoint_every=checkpoint_every,
                         check_samples=check_samples, restarts=restarts, placement=placement,
                         max_norm=max_norm)
    # every bad option, each named with its flag and value, before any model or image is loaded
    problems = [f"--{field.replace('_', '-')} {problem}" for field, problem in config.problems()]
    if lr == 0:  # the library takes 0 (the starting vectors); a learning run needs more
        problems.append("--lr must be positive, got 0")
    if problems:
        raise UsageError("; ".join(problems))
    config = dataclasses.replace(config, contexts=learn_contexts(contexts, classifier, model))
    if num_processes < 1:
        raise UsageError("--num-processes must be at least 1")
    if num_processes > 1:
        if launched_processes() > 1:
            raise UsageError("--num-processes cannot be used inside `accelerate launch`; drop one of them")
        if batch_size < num_processes:
            raise UsageError(f"--batch-size {batch_size} is smaller than --num-processes {num_processes}")
        check_job(EmbedJob(data=data, classifier=classifier[0], name=name[0], force=force, together=together))
        hand_off_to_accelerate(ctx, num_processes, device)
        return
    job = EmbedJob(data=data, classifier=classifier[0], name=name[0], together=together, model=model,
                   model_config=model_config, allow_pickle=allow_pickle, size=size, max_images=max_images,
                   device=device, dtype=dtype, force=force, resume=resume, grad_checkpointing=grad_checkpointing,
                   compile=compile_)
    from caso_cli.pipelines.learn import progress_text, tail_text

    with Progress(f"learn {'+'.join(name)}", None) as bar:
        entries, _result, metas = run_embed_job(
            job, config, status=bar.info,
            progress=lambda r: bar.update(r["step"], progress_text(r), total=r["total"]))
    if not is_main_process():
        return
    for entry, meta in zip(entries, metas, strict=True):
        m = meta["metrics"]
        check = m.get("generation_check") or m.get("edit_check")
        if json_out:  # a failed generation check carries the advice the text output prints
            failed = check is not None and not check["passed"] and check.get("kind") != "edit"
            advice_json = {"advice": check_advice(check)} if failed else {}
            print_json({"name": entry.name, "path": str(entry), **m, "classes": meta["classes"], **advice_json})
            continue
        together_note = f" together with {', '.join(meta['learned_with'])}" if meta.get("learned_with") else ""
        chosen = meta["hyperparameters"]
        t_at = f"t* {chosen['t_train']}" if chosen["t_train_max"] is None else \
            f"t {chosen['t_train']}:{chosen['t_train_max']}"
        if check and check.get("t_screen"):
            scr = check["t_screen"]
            rows = "; ".join(f"{r['t']}: " + ", ".join(f"{c} {v:.0%}" for c, v in r["rates"].items())
                             for r in scr["table"])
            info(f"t* screen ({scr['steps']} steps each, the generation check): {rows} - kept t {scr['chosen']}")
        info(f"learned {entry.name} ({', '.join(meta['classes'])}){together_note} in {m['steps']} steps, "
             f"{m['seconds']} s; {tail_text(m, check['runs'] if check and check['runs'] > 1 else None)} (the "
             f"training loss, and the share of one-step estimates at {t_at} the classifier reads as their target "
             "class)")
        if check and check.get("kind") == "edit":
            rates = ", ".join(f"{c} {r:.0%} (kept {check['kept'][c]:.0%})" for c, r in check["rates"].items())
            info(f"edit check: of up to {check['samples']} training images edited towards each class with the other "
                 f"attributes held (scale {check['scale']:g}; a first class by removing the second), the "
                 f"classifier reads as that class {rates}; kept: every other attribute reads as before"
                 + ("" if check["passed"] else " - below 90%: try more images or more --steps"))
        elif check:
            rates = ", ".join(f"{c} {r:.0%}" for c, r in check["rates"].items())
            info(f"generation check: of {check['samples']} samples per class generated from noise with its vector "
                 f"alone (CFG {check['scale']:g}, {plural(check['runs'], 'run')}), the "
                 f"classifier reads as their class {rates}"
                 + ("" if check["passed"] else " - below 90%: " + check_advice(check)))
        advice = "the other attributes' embeddings, learned with it, are held by caso edit --hold all" \
            if meta.get("learned_with") else "learn the attributes together and edit with --hold"
        for warning in (m.get("encodes") or {}).get("warnings", []):
            info(f"Warning: {warning} (the vector carries more than its class; {advice})")
        typer.echo(str(entry))


def check_advice(check: dict) -> str:
    """What to try when the generation check fails, from what this run measured."""
    scr = check.get("t_screen")
    if scr and max(r["min"] for r in scr["table"]) < 0.5:
        return ("no training timestep screened reached 50% for every class, so the model may not draw this "
                "attribute from its text input at all (caso edit still may move it: measure with caso eval); "
                "more --steps or images rarely help then")
    if scr:
        return (f"the screen's best t* was {scr['chosen']}; try more --steps at it (--t-train {scr['chosen']}), "
                "--restarts or more images")
    return "try --t-train auto (a screen of training timesteps), --restarts, more images or more --steps"


def hand_off_to_accelerate(ctx: typer.Context, num_processes: int, device: str) -> None:
    """Rerun this command under accelerate's launcher in ``num_processes`` processes (this one waits for them).

    The processes run ``python -m caso_cli embed learn`` with the same arguments less ``--num-processes``;
    accelerate's ``torch.distributed.run`` backend starts them, on the CPU with the gloo backend.
    """
    import sys

    from caso_cli.errors import UsageError

    if device.lower().startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < num_processes:
            raise UsageError(f"--num-processes {num_processes} needs as many GPUs; {torch.cuda.device_count()} found "
                             "(use --device cpu for CPU processes)")
    argv = ["embed", "learn"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name == "num_processes" or value is None or value == param.default:
            continue
        if param.param_type_name == "argument":
            argv.append(str(value))
        elif isinstance(value, list):  # a repeatable option
            for item in value:
                argv += [param.opts[0], str(item)]
        elif getattr(param, "is_flag", False):
            argv.append(param.opts[0])
        else:
            argv += [param.opts[0], str(value)]
    import socket

    from accelerate.commands.launch import launch_command, launch_command_parser

    with socket.socket() as sock:  # a free port for the processes' rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = launch_command_parser().parse_args(
        ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "caso_cli", *argv])
    import logging

    # the processes print their own one-line errors; torch's launcher would add a log line per failure
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch_command(args)
    except Exception as exc:  # torch.distributed's ChildFailedError: the processes printed their own errors
        failures = getattr(exc, "failures", {})
        codes = [f.exitcode for f in failures.values() if getattr(f, "exitcode", 0)]
        if not failures:
            raise
        code = codes[0] if codes and codes[0] > 0 else 1
        sys.exit(code)
