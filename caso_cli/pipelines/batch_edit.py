"""Edit image files in batches: load, invert once, edit with every requested guidance, save with provenance.

The library side of ``caso edit``: a generator of :class:`EditRecord`, one per input (an
output written, skipped, or an error for that input alone); it never prints. Inputs stream:
one batch of images is in memory at a time. Under ``accelerate launch`` each process edits
every N-th input (:func:`shard`), so the processes' outputs never collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from caso_cli.attrs import ResolvedAttr, format_scale
from caso_cli.config import EditConfig, ModelChoice
from caso_cli.errors import CasoError, UsageError
from caso_cli.io.inputs import InputItem
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images, nonfinite_hint
from caso_cli.pipelines.guidance import Contrast, Scale, attribute_guidance, check_model
from caso_cli.pipelines.hold import EditTerm, Token, hold_contrast, read_classes, source_classes
from caso_cli.pipelines.inversion_cache import InversionCache
from caso_cli.pipelines.provenance import provenance

if TYPE_CHECKING:
    from caso_cli.models.classifier import AttributeClassifier
    from caso_cli.models.loaders import StableDiffusion
    from caso_cli.registry import Embedding


@dataclass(frozen=True)
class EditJob:
    """What to edit and where the results go."""

    attrs: list[ResolvedAttr]  # one combined edit of these attributes
    out_dir: Path  # outputs: <out_dir>/<stem>.<labels>.<scale>.png
    config: EditConfig = field(default_factory=EditConfig)
    size: int | None = None  # image side; default the model's resolution
    fit: str = "crop"  # crop, pad or stretch (caso_cli.io.images.fit_image)
    batch_size: int = 4  # images per device batch
    overwrite: bool = False  # replace existing outputs
    skip_existing: bool = False  # leave existing outputs and move on (resume a killed run)
    kind: str = ""  # "" for edits, "recon" for reconstructions (<stem>.recon[.<attr>.<scale>].png)
    cache_inversions: bool = False  # keep inversions on disk under the user cache dir
    # the edit mode: registry entries held at the classes their classifiers read in each input
    # (caso_cli.pipelines.hold), and the form of the held guidance; none: the edited classes alone
    hold: tuple[Embedding, ...] = ()
    hold_form: str = "auto"
    # the word context of entries learned in context (docs/method.md §10); None: the entry's own default
    context: str | None = None


@dataclass
class EditRecord:
    """The outcome for one input."""

    input: str
    output: str | None = None
    status: str = "ok"  # ok, skipped or error
    error: str | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Holding:
    """A held edit ready to run: the held tokens with their classifiers, the guidance form, and the classifiers of
    edited attributes of more than two classes (their source class is read in the image)."""

    tokens: tuple[Token, ...]
    form: str
    edit_classifiers: dict[str, AttributeClassifier]


def prepare_holding(sd: StableDiffusion, attrs: list[ResolvedAttr], hold: Sequence[Embedding],
                    form: str = "auto") -> Holding | None:
    """Check every embedding (edited and held) against the model, then load the held ones' classifiers (None:
    nothing to hold)."""
    from caso_cli.pipelines.hold import FORMS, embedding_classifier

    check_model(attrs, sd, hold)
    if not hold:
        return None
    if form not in FORMS:
        raise UsageError(f"the hold form must be one of {', '.join(FORMS)}, got {form!r}")
    device = sd.runtime.device
    tokens = tuple(Token(e.name, e.vectors, embedding_classifier(e, device)) for e in hold)
    edit_clfs = {a.embedding.name: embedding_classifier(a.embedding, device) for a in attrs
                 if a.embedding.vectors.shape[0] > 2}
    return Holding(tokens, form, edit_clfs)


def output_path(job: EditJob, source: Path) -> Path:
    """``<out>/<stem>[.<kind>].<attr[+attr]>.<scale[,scale]>.png`` (``<stem>.recon.png`` unguided)."""
    parts = [source.stem] + ([job.kind] if job.kind else [])
    if job.attrs:
        scales = [format_scale(a.scale) for a in job.attrs]
        parts += ["+".join(a.label for a in job.attrs), scales[0] if len(set(scales)) == 1 else ",".join(scales)]
    return job.out_dir / (".".join(parts) + ".png")


def edit_guidance(sd: StableDiffusion, attrs: list[ResolvedAttr], holding: Holding | None,
                  x: torch.Tensor | None = None, scale: Scale | None = None,
                  context: str | None = None) -> tuple[Contrast, list[dict[str, str]]]:
    """The guidance of one batch, whatever the edit mode, and per image the held classes read.

    Without holding: :func:`~caso_cli.pipelines.guidance.attribute_guidance`, the same for every image (``x`` is
    not needed). With holding: the held contrast of the images ``x`` in [-1, 1] (docs/editing.md). ``scale``
    replaces every edited attribute's scale (a (B, 1, 1, 1) tensor guides each latent with its own). Entries
    learned in context: :func:`context_guidance` in ``context`` (default: the entry's own).
    """
    if any(a.embedding.meta.contexts for a in attrs):
        return context_guidance(sd, attrs, holding, x, scale, context)
    if holding is None:
        return attribute_guidance(sd, attrs, scale), []
    if x is None:
        raise ValueError("a held edit reads the images: pass them")
    edits = [EditTerm(Token(a.embedding.name, a.embedding.vectors, holding.edit_classifiers.get(a.embedding.name)),
                      a.index, a.scale if scale is None else scale) for a in attrs]
    device = sd.runtime.device
    read = read_classes(list(holding.tokens), x, device)
    contrast = hold_contrast(sd, edits, list(holding.tokens), read, source_classes(edits, x, device), holding.form)
    return contrast, _held_names(holding, read)


def _held_names(holding: Holding, read: torch.Tensor) -> list[dict[str, str]]:
    """Per image, each held entry's name -> the name of the class its classifier read."""
    return [{t.name: t.classifier.classes[int(k)]  # type: ignore[union-attr]
             for t, k in zip(holding.tokens, row, strict=True)} for row in read.tolist()]


def context_guidance(sd: StableDiffusion, attrs: list[ResolvedAttr], holding: Holding | None,
                     x: torch.Tensor | None = None, scale: Scale | None = None,
                     context: str | None = None) -> tuple[Contrast, list[dict[str, str]]]:
    """Guidance of entries learned in context, as a difference from the context in words (docs/method.md §10):
    eps(ctx) + sum_a w_a (eps(ctx + e_a) - eps(ctx)), ``ctx`` being ``context`` or the first entry's default, one
    term per edited attribute. With holding, each image's context also names the held attributes at the classes
    their classifiers read, in the model's words (:func:`caso_cli.contexts.class_words`)."""
    from caso_cli.contexts import class_words, with_held, with_slot

    if not all(a.embedding.meta.contexts for a in attrs):
        raise UsageError("entries learned in context cannot be edited together with entries learned as the whole "
                         "prompt; edit them one at a time")
    placements = {a.embedding.meta.placement for a in attrs}
    if len(placements) > 1:
        raise UsageError("entries learned as input tokens and as output deltas cannot be edited together")
    placement = placements.pop()
    ctx = with_slot(context or attrs[0].embedding.meta.contexts[0])
    held: list[dict[str, str]] = []
    rows = [ctx]
    if holding is not None:
        if x is None:
            raise ValueError("a held edit reads the images: pass them")
        held = _held_names(holding, read_classes(list(holding.tokens), x, sd.runtime.device))
        attr_of = {t.name: t.classifier.meta.attr for t in holding.tokens}  # type: ignore[union-attr]
        rows = [with_held(ctx, [class_words(sd.name, attr_of[name], cls) for name, cls in h.items()]) for h in held]
    device = sd.runtime.device
    with torch.no_grad():
        conds = [sd.family.encode_in_context(rows, None, placement)]
        conds += [sd.family.encode_in_context(rows, a.embedding.vectors[a.index].to(device), placement)
                  for a in attrs]
    terms = [(a.scale if scale is None else scale, 1 + i, 0) for i, a in enumerate(attrs)]
    return Contrast(conds, 0, terms), held


def _batches(items: Iterable[InputItem], n: int) -> Iterator[list[InputItem]]:
    batch: list[InputItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def shard(items: Iterable[InputItem], rank: int, world_size: int) -> Iterator[InputItem]:
    """This process's inputs: items ``rank``, ``rank + world_size``, ... (all of them in a single process)."""
    import itertools

    return iter(items) if world_size == 1 else itertools.islice(items, rank, None, world_size)


def shard_size(n: int, rank: int, world_size: int) -> int:
    """How many of ``n`` inputs :func:`shard` gives this process."""
    return len(range(rank, n, world_size))


def model_for(attrs: Sequence[ResolvedAttr], model: str | None) -> str | None:
    """The model to load: ``model`` if given, else the one the embeddings were learned for (all the same), else None
    (the default)."""
    if model is not None:
        return model
    models = {a.embedding.meta.model for a in attrs if a.embedding.meta.model is not None}
    if len(models) > 1:
        raise UsageError(f"the embeddings were learned for different models ({', '.join(sorted(models))}); "
                         "name one")
    return models.pop() if models else None


def open_model(choice: ModelChoice, attrs: Sequence[ResolvedAttr] = ()) -> StableDiffusion:
    """Load the model ``choice`` names (or the embeddings' own) on the device and dtype it asks for."""
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import make_runtime, pin_threads

    runtime = make_runtime(choice.device, choice.dtype)
    if runtime.device.type == "cpu":  # no-grad work: as many threads as cores are free (docs/performance.md)
        pin_threads(learning=False)
    return load_model(model_for(attrs, choice.name), runtime, config=choice.config, allow_pickle=choice.allow_pickle)


def _inversions(sd: StableDiffusion, job: EditJob, images: list[Any], cache: InversionCache | None) -> torch.Tensor:
    """Inverted latents of a batch of fitted images, from the cache where present."""
    from caso_cli.io.images import to_tensor

    found = {i: z for i, img in enumerate(images) if cache and (z := cache.get(img)) is not None}
    missing = [i for i in range(len(images)) if i not in found]
    if missing:
        z_new = invert_latents(sd, encode_images(sd, to_tensor([images[i] for i in missing])), job.config)
        for i, z in zip(missing, z_new, strict=True):
            found[i] = z.unsqueeze(0)
            if cache:
                cache.put(images[i], found[i])
    return torch.cat([found[i].to(sd.runtime.device, sd.net.dtype) for i in range(len(images))])


def run_edit_job(sd: StableDiffusion, job: EditJob, items: Iterable[InputItem],
                 on_record: Callable[[EditRecord], None] | None = None) -> Iterator[EditRecord]:
    """Edit every input (this process's share under accelerate launch); one record per input, in order."""
    from caso_cli.io.images import fit_image, load_image, to_pil, to_tensor
    from caso_cli.io.png import save_png

    holding = prepare_holding(sd, job.attrs, job.hold, job.hold_form)
    job.config.num_steps(sd.schedule)  # steps or a start this model's grid cannot take: one error, before any input
    size = job.size or sd.resolution
    cache = InversionCache(sd, job.config) if job.cache_inversions else None
    for batch in _batches(shard(items, sd.runtime.rank, sd.runtime.world_size), max(1, job.batch_size)):
        t0 = time.monotonic()
        records, todo, images = [], [], []
        for item in batch:
            rec = EditRecord(input=str(item.path))
            records.append(rec)
            if item.error:
                rec.status, rec.error = "error", f"{item.path}: {item.error}"
                continue
            out = output_path(job, item.path)  # a record's output is a file that is there: none for a failure
            if out.resolve() == item.path.resolve():
                rec.status, rec.error = "error", f"{item.path}: output would overwrite the input"
                continue
            if out.exists() and not job.overwrite:
                if job.skip_existing:
                    rec.status, rec.output = "skipped", str(out)
                else:
                    rec.status, rec.error = "error", f"{out}: exists (use --overwrite or --skip-existing)"
                continue
            try:
                image = load_image(item.path)
                rec.info["input_size"] = image.size  # (w, h) before fitting to the model's size
                images.append(fit_image(image, size, job.fit))
            except CasoError as exc:
                rec.status, rec.error = "error", str(exc)
                continue
            rec.output = str(out)
            todo.append(rec)
        if todo:
            z_t = _inversions(sd, job, images, cache)
            guidance, held = edit_guidance(sd, job.attrs, holding, to_tensor(images) if holding else None,
                                           context=job.context)
            for rec, h in zip(todo, held, strict=False):
                rec.info["held"] = h
            edited = decode_latents(sd, edit_latents(sd, z_t, guidance, job.config))
            seconds = (time.monotonic() - t0) / len(todo)
            for rec, x, img in zip(todo, edited, to_pil(edited), strict=True):
                rec.seconds = round(seconds, 3)
                if not torch.isfinite(x).all():
                    rec.status, rec.error = "error", (f"{rec.input}: the edit produced NaN/inf values, so "
                                                      f"nothing was written; {nonfinite_hint(sd)}")
                    rec.output = None
                    continue
                try:
                    meta = provenance(sd.name, job.attrs, config=job.config, source=rec.input,
                                      held=rec.info.get("held"), hold_form=job.hold_form, context=job.context)
                    save_png(img, Path(rec.output or ""), meta, overwrite=job.overwrite)
                except CasoError as exc:
                    rec.status, rec.error, rec.output = "error", str(exc), None
        for rec in records:
            if rec.status == "skipped":
                rec.seconds = 0.0
            if on_record:
                on_record(rec)
            yield rec


# ---- a whole batch: its inputs, the model, and what it came to ---------------------------------------------------

#: inputs this many times the model's side or more are shrunk so far that fine detail is lost (worth a warning)
SHRINK_WARNING = 8


def batch_inputs(inputs: Iterable[str], recursive: bool = False) -> list[InputItem]:
    """The inputs of a batch (files, folders, globs, ``-`` for paths on stdin), expanded; an input that cannot be
    read is an item with its ``error``. None at all is a :class:`UsageError`."""
    from caso_cli.io.inputs import expand_inputs

    items = list(expand_inputs(inputs, recursive))
    if not items:
        raise UsageError("no input images")
    return items


@dataclass
class Batch:
    """A batch ready to run: the loaded model, the job and its inputs. :meth:`run` edits them (this process's share)
    and keeps count: records by status, and the input sizes shrunk :data:`SHRINK_WARNING` times or more."""

    sd: StableDiffusion
    job: EditJob
    items: list[InputItem]
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "skipped": 0, "error": 0})
    shrunk: list[tuple[int, int]] = field(default_factory=list)  # (w, h) of each input shrunk that far

    @property
    def side(self) -> int:
        """The side the images are edited at."""
        return self.job.size or self.sd.resolution

    @property
    def total(self) -> int:
        """How many inputs this process edits."""
        return shard_size(len(self.items), self.sd.runtime.rank, self.sd.runtime.world_size)

    def run(self) -> Iterator[EditRecord]:
        """:func:`run_edit_job` over the inputs, counting each record as it comes."""
        for rec in run_edit_job(self.sd, self.job, self.items):
            size_in = rec.info.get("input_size")
            if size_in and min(size_in) >= SHRINK_WARNING * self.side:
                self.shrunk.append(size_in)
            self.counts[rec.status] += 1
            yield rec


def open_batch(job: EditJob, items: list[InputItem], choice: ModelChoice) -> Batch:
    """Load the model ``choice`` names (else the one the job's embeddings record) for a batch of ``items``."""
    return Batch(open_model(choice, job.attrs), job, items)
