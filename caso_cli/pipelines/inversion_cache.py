"""An on-disk cache of DDIM inversions under the user cache dir (opt-in: ``--cache-inversions``).

An inversion depends only on the image, the model, the size and the steps, so the key is the
sha256 of the fitted image's pixels plus the model's identity (name and text-encoder/UNet
fingerprint), the size, the grid and the number of inverted steps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from caso_cli.config import EditConfig

if TYPE_CHECKING:
    from PIL import Image

    from caso_cli.models.loaders import StableDiffusion


def model_fingerprint(sd: StableDiffusion) -> str:
    """Name + a hash of a slice of the UNet's weights and the VAE encoder's: cheap and specific."""
    h = hashlib.sha256(sd.name.encode())
    for module in (sd.net, sd.vae.encoder):
        for p in list(module.parameters())[:4]:
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes()[:65536])
    return h.hexdigest()[:16]


class InversionCache:
    """``get``/``put`` inverted latents by image and settings."""

    def __init__(self, sd: StableDiffusion, config: EditConfig, folder: Path | None = None) -> None:
        from caso_cli.io.paths import cache_dir

        self.folder = folder or cache_dir() / "inversions"
        steps = f"{config.steps}-{config.num_steps(sd.schedule)}-r{config.inversion_refine}"
        self.prefix = f"{model_fingerprint(sd)}-{steps}"

    def key(self, image: Image.Image) -> str:
        digest = hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()[:32]
        return f"{self.prefix}-{digest}"

    def get(self, image: Image.Image) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self.folder / f"{self.key(image)}.safetensors"
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["z_t"]
        except Exception:  # a damaged entry is a miss
            return None

    def put(self, image: Image.Image, z_t: torch.Tensor) -> None:
        from safetensors.torch import save_file

        from caso_cli.io.files import atomic_path

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.key(image)}.safetensors"
        with atomic_path(path) as tmp:
            save_file({"z_t": z_t.detach().float().cpu().contiguous()}, str(tmp))
