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

from caso_cli import __version__
from caso_cli.attrs import ResolvedAttr, format_scale
from caso_cli.conditioning import encode_vectors, null_condition
from caso_cli.config import EditConfig
from caso_cli.errors import CasoError, UsageError
from caso_cli.inputs import InputItem
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images, nonfinite_hint
from caso_cli.pipelines.guidance import Contrast, Scale
from caso_cli.pipelines.hold import EditTerm, Token, hold_contrast, read_classes, source_classes
from caso_cli.pipelines.inversion_cache import InversionCache

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
    fit: str = "crop"  # crop, pad or stretch (caso_cli.imageio.fit_image)
    batch_size: int = 4  # images per device batch
    overwrite: bool = False  # replace existing outputs
    skip_existing: bool = False  # leave existing outputs and move on (resume a killed run)
    seed: int = 0  # recorded; DDIM inversion and editing are deterministic
    kind: str = ""  # "" for edits, "recon" for reconstructions (<stem>.recon[.<attr>.<scale>].png)
    cache_inversions: bool = False  # keep inversions on disk under the user cache dir
    # attributes held at the classes their classifiers read in each input (caso_cli.pipelines.hold), and the form
    # of the held guidance; edited attributes with more than two classes need their classifier here too
    hold: tuple[Token, ...] = ()
    hold_form: str = "auto"
    edit_classifiers: dict[str, AttributeClassifier] = field(default_factory=dict)


@dataclass
class EditRecord:
    """The outcome for one input."""

    input: str
    output: str | None = None
    status: str = "ok"  # ok, skipped or error
    error: str | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def check_model(attrs: list[ResolvedAttr], sd: StableDiffusion, held: Sequence[Embedding] = ()) -> None:
    """Refuse embeddings (edited or held) made for another text encoder (size or weights)."""
    from caso_cli.registry import text_encoder_hash

    for emb in [a.embedding for a in attrs] + list(held):
        d = emb.vectors.shape[1]
        if d != sd.token_dim:
            raise UsageError(f"embedding {emb.name!r} has {d}-dim vectors but model {sd.name!r} takes "
                             f"{sd.token_dim} (made for another text encoder; use --model "
                             f"{emb.meta.get('model', '?')})")
        want = emb.meta.get("text_encoder_hash")
        if want and want != text_encoder_hash(sd.text_encoder):
            raise UsageError(f"embedding {emb.name!r} was learned for model {emb.meta.get('model')!r}"
                             f", whose text encoder differs from {sd.name!r}'s; use --model "
                             f"{emb.meta.get('model')}")


def hold_tokens(sd: StableDiffusion, attrs: list[ResolvedAttr], held: Sequence[Embedding]) -> tuple[
        tuple[Token, ...], dict[str, AttributeClassifier]]:
    """Tokens of the held embeddings with their classifiers, and the classifiers of edited attributes of more
    than two classes (their source class is read); checks every embedding against the model first."""
    from caso_cli.pipelines.hold import embedding_classifier

    check_model(attrs, sd, held)
    device = sd.runtime.device
    tokens = tuple(Token(e.name, e.vectors, embedding_classifier(e, device)) for e in held)
    edit_clfs = {a.embedding.name: embedding_classifier(a.embedding, device) for a in attrs
                 if held and a.embedding.vectors.shape[0] > 2}
    return tokens, edit_clfs


def output_path(job: EditJob, source: Path) -> Path:
    """``<out>/<stem>[.<kind>].<attr[+attr]>.<scale[,scale]>.png`` (``<stem>.recon.png`` unguided)."""
    parts = [source.stem] + ([job.kind] if job.kind else [])
    if job.attrs:
        scales = [format_scale(a.scale) for a in job.attrs]
        parts += ["+".join(a.label for a in job.attrs), scales[0] if len(set(scales)) == 1 else ",".join(scales)]
    return job.out_dir / (".".join(parts) + ".png")


def guidance(sd: StableDiffusion, attrs: list[ResolvedAttr]) -> tuple[Any, Any]:
    """One multi-token condition [BOS, e_a, e_b, EOS] when the scales agree (docs/method.md §1); else one term each.

    The tokens go in a canonical order (embedding name, then class), whatever the order of ``--attr``: the text
    encoder is causal and reads [e_a, e_b] and [e_b, e_a] differently (on the toy model, 21% of pixels differ by
    more than 4 levels; docs/editing.md), so a fixed order makes the edit independent of the command line.
    No attributes: the null condition at scale 0 (an unguided reconstruction).
    """
    with torch.no_grad():
        if not attrs:
            return null_condition(sd.text_encoder, sd.tokenizer), 0.0
        attrs = sorted(attrs, key=lambda a: (a.embedding.name, a.index))
        if len({a.scale for a in attrs}) == 1:
            vectors = torch.stack([a.embedding.vectors[a.index] for a in attrs]).to(sd.runtime.device)
            return encode_vectors(sd.text_encoder, sd.tokenizer, vectors), attrs[0].scale
        conds = [encode_vectors(sd.text_encoder, sd.tokenizer, a.embedding.vectors[a.index:a.index + 1]
                                .to(sd.runtime.device)) for a in attrs]
        return conds, [a.scale for a in attrs]


def held_guidance(sd: StableDiffusion, job: EditJob, x: torch.Tensor,
                  scale: Scale | None = None) -> tuple[Contrast, list[dict[str, str]]]:
    """The held edit of a batch of images ``x`` in [-1, 1]: its guidance, and per image the held classes read.
    ``scale`` replaces every edited attribute's scale (a (B, 1, 1, 1) tensor guides each latent with its own)."""
    edits = [EditTerm(Token(a.embedding.name, a.embedding.vectors, job.edit_classifiers.get(a.embedding.name)),
                      a.index, a.scale if scale is None else scale) for a in job.attrs]
    device = sd.runtime.device
    read = read_classes(list(job.hold), x, device)
    contrast = hold_contrast(sd, edits, list(job.hold), read, source_classes(edits, x, device), job.hold_form)
    held = [{t.name: t.classifier.classes[int(k)] for t, k in zip(job.hold, row, strict=True)}  # type: ignore[union-attr]
            for row in read.tolist()]
    return contrast, held


def held_provenance(held: dict[str, str] | None, form: str) -> dict[str, str]:
    """PNG text chunks of a held edit: the classes read (``hair=black,smile=smile``) and the guidance form."""
    return {"caso:held": ",".join(f"{k}={v}" for k, v in held.items()), "caso:hold_form": form} if held else {}


def provenance(sd: StableDiffusion, job: EditJob, source: Path, held: dict[str, str] | None = None) -> dict[str, str]:
    """PNG text chunks recording how an output was made (``held``: the classes read for the held attributes)."""
    return {**held_provenance(held, job.hold_form),
        "caso:version": __version__, "caso:input": str(source), "caso:model": sd.name,
        "caso:embeddings": ",".join(a.embedding.name for a in job.attrs),
        "caso:embedding_sha256": ",".join(str(a.embedding.meta.get("sha256", ""))[:16] for a in job.attrs),
        "caso:classes": ",".join(a.cls for a in job.attrs),
        "caso:scales": ",".join(format_scale(a.scale) for a in job.attrs),
        "caso:start": job.config.start_label(), "caso:steps": str(job.config.steps),
        "caso:inversion_refine": str(job.config.inversion_refine),
        "caso:single_step": str(job.config.single_step).lower(), "caso:seed": str(job.seed),
    }


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


def _inversions(sd: StableDiffusion, job: EditJob, images: list[Any], cache: InversionCache | None) -> torch.Tensor:
    """Inverted latents of a batch of fitted images, from the cache where present."""
    from caso_cli.imageio import to_tensor

    found = [cache.get(img) if cache else None for img in images]
    missing = [i for i, z in enumerate(found) if z is None]
    if missing:
        z_new = invert_latents(sd, encode_images(sd, to_tensor([images[i] for i in missing])), job.config)
        for i, z in zip(missing, z_new, strict=True):
            found[i] = z.unsqueeze(0)
            if cache:
                cache.put(images[i], found[i])
    return torch.cat([z.to(sd.runtime.device, sd.unet.dtype) for z in found])


def run_edit_job(sd: StableDiffusion, job: EditJob, items: Iterable[InputItem],
                 on_record: Callable[[EditRecord], None] | None = None) -> Iterator[EditRecord]:
    """Edit every input (this process's share under accelerate launch); one record per input, in order."""
    from caso_cli.imageio import fit_image, load_image, save_png, to_pil

    check_model(job.attrs, sd)
    job.config.num_steps(sd.schedule)  # steps or a start this model's grid cannot take: one error, before any input
    size = job.size or sd.resolution
    cond, scale = guidance(sd, job.attrs)
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
            out = output_path(job, item.path)
            rec.output = str(out)
            if out.resolve() == item.path.resolve():
                rec.status, rec.error = "error", f"{item.path}: output would overwrite the input"
                continue
            if out.exists() and not job.overwrite:
                if job.skip_existing:
                    rec.status = "skipped"
                else:
                    rec.status, rec.error = "error", f"{out}: exists (use --overwrite or --skip-existing)"
                continue
            try:
                images.append(fit_image(load_image(item.path), size, job.fit))
            except CasoError as exc:
                rec.status, rec.error = "error", str(exc)
                continue
            todo.append(rec)
        if todo:
            z_t = _inversions(sd, job, images, cache)
            if job.hold:
                from caso_cli.imageio import to_tensor

                cond, held = held_guidance(sd, job, to_tensor(images))
                for rec, h in zip(todo, held, strict=True):
                    rec.info["held"] = h
            edited = decode_latents(sd, edit_latents(sd, z_t, cond, scale, job.config))
            seconds = (time.monotonic() - t0) / len(todo)
            for rec, x, img in zip(todo, edited, to_pil(edited), strict=True):
                rec.seconds = round(seconds, 3)
                if not torch.isfinite(x).all():
                    rec.status, rec.error = "error", (f"{rec.input}: the edit produced NaN/inf values, so "
                                                      f"nothing was written; {nonfinite_hint(sd)}")
                    rec.output = None
                    continue
                try:
                    save_png(img, Path(rec.output or ""), provenance(sd, job, Path(rec.input), rec.info.get("held")),
                             overwrite=job.overwrite)
                except CasoError as exc:
                    rec.status, rec.error, rec.output = "error", str(exc), None
        for rec in records:
            if rec.status == "skipped":
                rec.seconds = 0.0
            if on_record:
                on_record(rec)
            yield rec
