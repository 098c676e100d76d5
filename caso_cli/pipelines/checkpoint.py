"""A learning run's checkpoint: vectors, AdamW moments, step and RNG state in a folder, written atomically, so that
``caso embed learn --resume`` continues an interrupted run to the vectors an uninterrupted one learns."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from caso_cli.errors import UsageError


class Checkpoint:
    """Vectors, AdamW moments, step and RNG state in a folder, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started = time.monotonic()  # learning time before this process is kept in the checkpoint
        self.seconds_before = 0.0  # the time the runs before a resume took (set by load)

    @property
    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def save(self, step: int, vectors: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator,
             history: list[dict[str, float]], fingerprint: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        from caso_cli.io.files import atomic_path, atomic_write

        self.folder.mkdir(parents=True, exist_ok=True)
        state = opt.state.get(vectors, {})
        tensors = {"vectors": vectors.detach().cpu().contiguous(), "rng": gen.get_state()}
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[key] = state[key].detach().cpu().contiguous()
        with atomic_path(self.folder / "state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        info = {"step": step, "adam_step": float(state.get("step", 0)), "history": history, "fingerprint": fingerprint,
                "seconds": self.seconds_before + time.monotonic() - self.started}
        with atomic_write(self.folder / "state.json", "w") as fh:
            fh.write(json.dumps(info))

    def load(self, vectors: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator,
             fingerprint: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
        from safetensors.torch import load_file

        info = json.loads((self.folder / "state.json").read_text())
        if info["fingerprint"] != fingerprint:
            saved = info["fingerprint"]  # a setting only one side has (an option since added or removed) differs too
            diff = sorted(k for k in {*fingerprint, *saved} if saved.get(k) != fingerprint.get(k))
            raise UsageError(f"checkpoint in {self.folder} was made with other settings ({', '.join(diff)}); "
                             "rerun with the same options or without --resume")
        self.seconds_before, self.started = float(info.get("seconds", 0.0)), time.monotonic()
        tensors = load_file(str(self.folder / "state.safetensors"))
        with torch.no_grad():
            vectors.copy_(tensors["vectors"].to(vectors.device))
        gen.set_state(tensors["rng"])
        if "exp_avg" in tensors:
            opt.state[vectors] = {
                "step": torch.tensor(info["adam_step"]),
                "exp_avg": tensors["exp_avg"].to(vectors.device),
                "exp_avg_sq": tensors["exp_avg_sq"].to(vectors.device),
            }
        return int(info["step"]), list(info["history"])
