"""A loaded model: its frozen components, and the three things every pipeline asks of it.

* the **denoiser** :meth:`StableDiffusion.eps`: (z_t, t, condition) -> eps, whatever the network (a UNet, SD3's
  transformer) and whatever it predicts (epsilon, v, flow velocity): the family calls the network, the schedule
  turns its output into a noise prediction (docs/method.md §2);
* the **latents** :meth:`~StableDiffusion.encode_latents` / :meth:`~StableDiffusion.decode_latents`: the VAE with
  its scale and shift, and :meth:`~StableDiffusion.latent_shape`;
* the **text side** ``sd.family`` (:mod:`caso_cli.families`): conditions for vectors and prompts.

:func:`caso_cli.models.loaders.load_model` builds one. Pipelines run the network and the VAE only through these; they
read ``sd.net`` and ``sd.vae`` for their dtype alone (and the inversion cache hashes their weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caso_cli.diffusion import to_eps

if TYPE_CHECKING:
    import torch

    from caso_cli.diffusion import NoiseSchedule
    from caso_cli.families import Condition, Family
    from caso_cli.runtime import Runtime


@dataclass
class StableDiffusion:
    """The frozen components caso needs, plus facts derived from their configs."""

    vae: Any  # diffusers AutoencoderKL
    net: Any  # the denoising network: UNet2DConditionModel, or SD3Transformer2DModel for SD3
    scheduler: Any  # the scheduler as configured by the model (used for its config only)
    schedule: NoiseSchedule  # noise levels and DDIM grid rule
    runtime: Runtime  # device and dtype the components live on
    name: str  # what the user asked for (hub id, path, "toy")
    family: Family  # the text side and the network's inputs (caso_cli.families)
    _vae_fp32: Any = field(default=None, repr=False)  # fp32 copy of the VAE, made on first need

    # ---- the denoiser contract ------------------------------------------------------------------------------------

    def eps(self, z: torch.Tensor, t: int, cond: Condition) -> torch.Tensor:
        """eps(z_t, t, c): the network's prediction at timestep ``t`` as a noise prediction (docs/method.md §2).

        ``cond`` has one row (shared by every latent) or one per latent.
        """
        size = (z.shape[-2] * self.vae_scale, z.shape[-1] * self.vae_scale)
        out = self.family.net_output(self.net, z, self.schedule.model_time(t), cond.expand(z.shape[0]), size)
        return to_eps(out, z, self.schedule.level(t), self.prediction_type)

    # ---- latents ---------------------------------------------------------------------------------------------------

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """z0 = (E(x) - shift) s: the VAE posterior's mean, scaled (docs/method.md §4)."""
        z = self.vae.encode(images.to(self.runtime.device, self.vae.dtype)).latent_dist.mean
        return (z if self.shift_factor is None else z - self.shift_factor) * self.scaling_factor

    def decode_latents(self, z: torch.Tensor, vae: Any = None) -> torch.Tensor:
        """x = D(z / s + shift) in float32 (docs/method.md Eq. 10), with ``vae`` (default: the model's)."""
        vae = self.vae if vae is None else vae
        z = z / self.scaling_factor
        if self.shift_factor is not None:
            z = z + self.shift_factor
        return vae.decode(z.to(vae.dtype)).sample.float()

    def latent_shape(self, size: int | None = None) -> tuple[int, int, int]:
        """(channels, h, w) of the latents of a square image of ``size`` pixels (default: the model's)."""
        side = (size or self.resolution) // self.vae_scale
        return int(self.vae.config.latent_channels), side, side

    def vae_fp32(self) -> Any:
        """The VAE in fp32 on the same device: the fallback when a half-precision decode overflows."""
        import copy

        import torch

        if self.vae.dtype == torch.float32:
            return self.vae
        if self._vae_fp32 is None:
            self._vae_fp32 = copy.deepcopy(self.vae).to(torch.float32)
        return self._vae_fp32

    # ---- facts -----------------------------------------------------------------------------------------------------

    @property
    def scaling_factor(self) -> float:
        """VAE latent scaling s (0.18215 for SD 1.x)."""
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def shift_factor(self) -> float | None:
        """VAE latent shift (SD3: 0.0609; None for SD 1.x/2.x and SDXL)."""
        shift = getattr(self.vae.config, "shift_factor", None)
        return None if shift is None else float(shift)

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The image size the network was built for (512 for SD 1.5, 768 for SD 2.x-v, 1024 for SDXL and SD3)."""
        size = self.net.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale

    @property
    def token_dim(self) -> int:
        """Width of one learned vector (768 for SD 1.x, 1024 for SD 2.x)."""
        return self.family.vector_dim

    @property
    def prediction_type(self) -> str:
        return self.schedule.prediction_type

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded model, for ``caso model info`` and provenance."""
        return {
            "model": self.name,
            "family": self.family.name,
            "resolution": self.resolution,
            "latent_channels": int(self.vae.config.latent_channels),
            "vae_scale": self.vae_scale,
            "scaling_factor": self.scaling_factor,
            "token_dim": self.token_dim,
            "network": type(self.net).__name__,
            "prediction_type": self.prediction_type,
            "num_train_timesteps": self.schedule.num_train_timesteps,
            "device": str(self.runtime.device),
            "dtype": str(self.runtime.dtype).replace("torch.", ""),
            **self.family.describe(),
            "parameters": {name: sum(p.numel() for p in module.parameters())
                           for name, module in {"vae": self.vae, self.family.net_part: self.net,
                                                **self.family.modules()}.items()},
        }
