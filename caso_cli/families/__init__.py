"""Model families: what one kind of diffusion model is made of, and how it turns learned vectors and prompts into
the conditions its network reads.

A family lists and loads its components (the VAE, the denoising network, the scheduler, the text side), turns its
scheduler into a noise schedule (:mod:`caso_cli.diffusion`: which prediction type, which noise levels) and calls
its network (:meth:`Family.net_output`); :class:`caso_cli.models.loaded.StableDiffusion` wraps these into the one
denoiser contract every pipeline calls, ``sd.eps(z, t, condition)``. Everything caso knows about a model's text side
goes through the :class:`Family` bound to the loaded components (``sd.family``): learning, editing, holding and
generation encode through it, the registry records its name, vector width and encoder hash, and export writes its
file layout. A condition is a :class:`Condition`: the network's text states plus any further inputs a family needs
(SDXL: pooled text embeddings and size/crop time ids; SD3: pooled projections), one row per latent or one row for
all.

Stable Diffusion 1.x / 2.x (:mod:`caso_cli.families.sd`) is the first family, SDXL and SD3 the others. Adding one is
a module with a :class:`Family` subclass that calls :func:`register_family` (docs/models.md, "Model families").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from caso_cli.plugins import Lookup

if TYPE_CHECKING:
    import torch

    from caso_cli.diffusion import NoiseSchedule

DEFAULT_FAMILY = "sd"  # what registry entries and models that name no family are


@dataclass(frozen=True)
class Condition:
    """What the UNet reads besides the latents and the timestep, for B rows (docs/method.md §1)."""

    hidden: torch.Tensor  # (B, L, D) encoder_hidden_states
    extra: Mapping[str, torch.Tensor] = field(default_factory=dict)  # further UNet inputs, (B, ...) each

    @property
    def batch(self) -> int:
        return int(self.hidden.shape[0])

    def expand(self, b: int) -> Condition:
        """The same condition for ``b`` latents: one row repeated (no copy), or itself when it has ``b`` rows."""
        if self.batch == b:
            return self
        if self.batch != 1:
            raise ValueError(f"a condition of {self.batch} rows cannot guide {b} latents")
        return Condition(self.hidden.expand(b, *self.hidden.shape[1:]),
                         {k: v.expand(b, *v.shape[1:]) for k, v in self.extra.items()})

    def __getitem__(self, rows: slice) -> Condition:
        return Condition(self.hidden[rows], {k: v[rows] for k, v in self.extra.items()})

    @staticmethod
    def cat(conds: Sequence[Condition]) -> Condition:
        """The rows of several conditions of one family, in order."""
        import torch

        keys = set(conds[0].extra)
        if any(set(c.extra) != keys for c in conds):
            raise ValueError("conditions of different families cannot be batched together")
        extra = {k: torch.cat([c.extra[k] for c in conds]) for k in keys}
        return Condition(torch.cat([c.hidden for c in conds]), extra)



class Family(ABC):
    """One model family: its components and network call (class level), and its text side, bound to a loaded
    model's text encoders and tokenizers.

    A learned vector is one row of width :attr:`vector_dim` (for a family with several text encoders, their
    token vectors side by side), so embeddings are (K, vector_dim) whatever the family.
    """

    name: ClassVar[str]  # recorded in registry entries ("sd")
    title: ClassVar[str]  # what a user calls it in messages ("Stable Diffusion 1.x/2.x")
    net_part: ClassVar[str] = "unet"  # the component folder of the denoising network
    net_class: ClassVar[str] = "UNet2DConditionModel"  # its diffusers class
    scheduler_class: ClassVar[str] = "DDIMScheduler"  # the diffusers scheduler caso reads the schedule from
    pipelines: ClassVar[tuple[str, ...]]  # diffusers pipeline classes of this family (model_index.json's
    # _class_name); the first loads single-file checkpoints
    text_parts: ClassVar[tuple[str, ...]]  # the component folders of the text side
    single_file_extras: ClassVar[dict[str, Any]] = {}  # arguments of the pipeline's from_single_file that keep
    # optional parts (safety checker...) from being loaded

    @classmethod
    def components(cls) -> tuple[str, ...]:
        """The component folders a diffusers model of this family has."""
        return ("vae", cls.net_part, "scheduler", *cls.text_parts)

    @classmethod
    def load_parts(cls, source: str, dtype: Any, local_only: bool) -> dict[str, Any]:
        """Every component (VAE, network, scheduler, text side) from a diffusers folder or hub id."""
        import diffusers

        common = {"local_files_only": local_only}
        return {
            "vae": diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **common),
            cls.net_part: getattr(diffusers, cls.net_class).from_pretrained(source, subfolder=cls.net_part,
                                                                            torch_dtype=dtype, **common),
            **cls.load_text(source, dtype, local_only),
            "scheduler": getattr(diffusers, cls.scheduler_class).from_pretrained(source, subfolder="scheduler",
                                                                                **common),
        }

    @classmethod
    @abstractmethod
    def load_text(cls, source: str, dtype: Any, local_only: bool) -> dict[str, Any]:
        """The text components (named as in :attr:`text_parts`) from a diffusers folder or hub id."""

    @classmethod
    def from_pipeline(cls, pipe: Any) -> dict[str, Any]:
        """Every component of a loaded diffusers pipeline (single-file loading), the scheduler as caso reads it."""
        import diffusers

        return {"vae": pipe.vae, cls.net_part: getattr(pipe, cls.net_part),
                **{name: getattr(pipe, name) for name in cls.text_parts},
                "scheduler": getattr(diffusers, cls.scheduler_class).from_config(pipe.scheduler.config)}

    @classmethod
    def schedule_of(cls, scheduler: Any) -> NoiseSchedule:
        """The noise schedule of the model's scheduler (``ValueError`` for one caso cannot use)."""
        from caso_cli.diffusion import schedule_from_config

        return schedule_from_config(scheduler)

    def net_output(self, net: Any, z: torch.Tensor, timestep: float | int, cond: Condition,
                   size: tuple[int, int]) -> torch.Tensor:
        """The network's raw prediction for latents ``z`` of images ``size`` = (height, width) pixels at
        ``timestep`` (what the network reads), one condition row per latent; the schedule's prediction type says
        what it is (docs/method.md §2)."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": cond.hidden}
        extra = self.added_inputs(cond, size)
        if extra:
            kwargs["added_cond_kwargs"] = extra
        return net(z, timestep, **kwargs).sample

    def added_inputs(self, cond: Condition, size: tuple[int, int]) -> dict[str, Any]:
        """The UNet's ``added_cond_kwargs`` for ``cond`` (none for SD 1.x/2.x)."""
        return dict(cond.extra)

    @classmethod
    def matches_checkpoint(cls, keys: set[str]) -> bool:
        """Whether an original-layout single-file checkpoint with these tensor names is of this family."""
        return False

    @abstractmethod
    def __init__(self, parts: Mapping[str, Any]) -> None:
        """Bind to the loaded components (a dict holding at least :attr:`text_parts`)."""

    @abstractmethod
    def modules(self) -> dict[str, Any]:
        """The text encoder modules by component name (frozen by the loader, counted by ``model info``)."""

    @property
    def vector_dim(self) -> int:
        """Width of one learned vector: the text encoders' token widths side by side."""
        return sum(self.widths)

    @property
    @abstractmethod
    def widths(self) -> list[int]:
        """The token width of each text encoder, in the order their parts sit in a vector."""

    @abstractmethod
    def encode_vectors(self, vectors: torch.Tensor) -> Condition:
        """The condition naming learned vectors ``e_1..e_m``: (m, d) gives one row, (B, m, d) B rows (§1)."""

    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """Conditions for ordinary text prompts, one row each, as the family's diffusers pipeline encodes them."""

    def encode_in_context(self, contexts: list[str], vectors: torch.Tensor | None,
                          placement: str = "token") -> Condition:
        """Conditions for one learned vector per context, placed in its slot, or the contexts themselves when
        ``vectors`` is None (docs/method.md §10; :func:`caso_cli.conditioning.encode_in_context`)."""
        from caso_cli.errors import UsageError

        raise UsageError(f"learning and editing in context is not available for {self.name} models yet")

    def context_width(self, placement: str) -> int:
        """Width of a vector learned in context: a token's (``token``) or an output state's (``output``)."""
        return self.vector_dim

    @abstractmethod
    def null_condition(self) -> Condition:
        """The unconditional branch's condition c_null, one row (§1)."""

    def record(self) -> dict[str, Any]:
        """What a registry entry records about the text side its vectors were learned for."""
        return {"family": self.name, "widths": self.widths, "text_encoder_hash": self.encoder_hash()}

    def describe(self) -> dict[str, Any]:
        """Facts for ``caso model info``: the text encoders and their widths."""
        return {"text_encoders": ", ".join(f"{type(m).__name__} ({w})" for m, w in
                                           zip(self.modules().values(), self.widths, strict=True))}

    @abstractmethod
    def encoder_hash(self) -> str:
        """Identifies the text side's weights: vectors learned for one hash mean nothing to another."""

    @abstractmethod
    def token_table(self) -> torch.Tensor:
        """(V, vector_dim) float32 on the CPU: the token embeddings, the scale of fresh vectors."""

    @abstractmethod
    def word_vector(self, word: str) -> torch.Tensor:
        """(vector_dim,) the token embedding of a one-token word (raises UsageError otherwise)."""

    @classmethod
    @abstractmethod
    def export_tensors(cls, token: str, vector: torch.Tensor, fmt: str, widths: list[int]) -> dict[str, torch.Tensor]:
        """The tensors of one class's textual-inversion file in ``fmt`` (``diffusers`` or ``a1111``); ``widths``
        as recorded with the embedding."""

    @classmethod
    @abstractmethod
    def read_file_tensors(cls, tensors: dict[str, torch.Tensor]) -> tuple[str | None, torch.Tensor, list[int]] | None:
        """(token or None, vector, widths) from a textual-inversion file of this family's layout, else None;
        ``ValueError`` for a file of this layout that caso cannot use."""


class SideBySide(Family):
    """A family whose learned vector is several text encoders' token vectors side by side (SDXL, SD3): its widths,
    token table, word vectors, encoder hash and textual-inversion files (one tensor per encoder, :attr:`file_keys`)
    follow from :meth:`text_pairs`."""

    file_keys: ClassVar[tuple[str, ...]]  # the file's key of each encoder's part ("clip_l", "clip_g", ...)

    @abstractmethod
    def text_pairs(self) -> list[tuple[Any, Any]]:
        """(text encoder, tokenizer) of each encoder, in the order their parts sit in a vector."""

    def _tables(self) -> list[torch.Tensor]:
        return [te.get_input_embeddings().weight.detach().float().cpu() for te, _ in self.text_pairs()]

    @property
    def widths(self) -> list[int]:
        return [int(te.get_input_embeddings().weight.shape[1]) for te, _ in self.text_pairs()]

    def encoder_hash(self) -> str:
        import hashlib

        from caso_cli.conditioning import table_hash

        return hashlib.sha256("".join(table_hash(te) for te, _ in self.text_pairs()).encode()).hexdigest()[:16]

    def token_table(self) -> torch.Tensor:
        import torch

        tables = self._tables()
        rows = min(t.shape[0] for t in tables)
        return torch.cat([t[:rows] for t in tables], dim=1)

    def word_vector(self, word: str) -> torch.Tensor:
        import torch

        from caso_cli.errors import UsageError

        parts = []
        for table, (_, tok) in zip(self._tables(), self.text_pairs(), strict=True):
            ids = tok(word, add_special_tokens=False).input_ids
            if len(ids) != 1:
                raise UsageError(f"init word {word!r} is {len(ids)} tokens for this tokenizer; use a single-token "
                                 "word")
            parts.append(table[ids[0]])
        return torch.cat(parts)

    @classmethod
    def export_tensors(cls, token: str, vector: torch.Tensor, fmt: str, widths: list[int]) -> dict[str, torch.Tensor]:
        # the same layout for every tool and format: A1111, ComfyUI, and diffusers (loaded once per encoder)
        return {key: part.unsqueeze(0).contiguous() for key, part in zip(cls.file_keys, vector.split(widths),
                                                                         strict=True)}

    @classmethod
    def read_file_tensors(cls, tensors: dict[str, torch.Tensor]) -> tuple[str | None, torch.Tensor, list[int]] | None:
        import torch

        if set(tensors) != set(cls.file_keys):
            return None
        parts = [tensors[k] for k in cls.file_keys]
        if any(p.dim() != 2 or p.shape[0] != 1 for p in parts):
            raise ValueError(f"{cls.title} textual-inversion tensors of shapes {[tuple(p.shape) for p in parts]}; "
                             "caso imports one token per file")
        return None, torch.cat([p[0] for p in parts]), [int(p.shape[1]) for p in parts]


#: family name -> class; the built-in families register on first lookup
_FAMILIES: Lookup[type[Family]] = Lookup(("caso_cli.families.sd", "caso_cli.families.sdxl", "caso_cli.families.sd3"))


def register_family(cls: type[Family]) -> type[Family]:
    """Make a family known to the loader and the registry (usable as a class decorator); registering a name again
    replaces it."""
    _FAMILIES.load()[cls.name] = cls  # built-in families first, so that a later registration of the name wins
    return cls


def model_index(source: str, local_only: bool) -> dict[str, Any]:
    """A model's ``model_index.json``: from the diffusers folder ``source``, else from the hub id's cached (or, unless
    ``local_only``, downloaded) copy. Hub misses raise huggingface_hub's own errors (OSError subclasses)."""
    import json
    from pathlib import Path

    index = Path(source) / "model_index.json"
    if not index.is_file():
        from huggingface_hub import hf_hub_download

        index = Path(hf_hub_download(source, "model_index.json", local_files_only=local_only))
    found = json.loads(index.read_text())
    if not isinstance(found, dict):
        raise ValueError(f"{index}: not a JSON object")
    return found


def family_named(name: str | None) -> type[Family]:
    """The family called ``name`` (None: the default); unknown names raise ``KeyError`` with the known ones."""
    found = _FAMILIES.load().get(name or DEFAULT_FAMILY)
    if found is None:
        raise KeyError(f"unknown model family {name!r} (known: {', '.join(family_names())})")
    return found


def family_for_pipeline(class_name: str | None) -> type[Family] | None:
    """The family whose diffusers pipeline is ``class_name`` (model_index.json): the default when no class is
    named, None when no known family has that pipeline."""
    if not class_name:
        return family_named(DEFAULT_FAMILY)
    return next((cls for cls in _FAMILIES.load().values() if class_name in cls.pipelines), None)


def family_names() -> list[str]:
    """The known families, sorted."""
    return sorted(_FAMILIES.load())


def families() -> list[type[Family]]:
    """The known family classes (the default first)."""
    found = _FAMILIES.load()
    return [found[DEFAULT_FAMILY], *(cls for name, cls in sorted(found.items()) if name != DEFAULT_FAMILY)]
