"""The one place that decides device, dtype, seeds and backend settings.

Nothing else in caso picks a device: pipelines receive a :class:`Runtime`.
Random numbers always come from a CPU ``torch.Generator`` (see :func:`randn`), so one
seed gives the same noise, and the same result up to kernel differences, on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from caso_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision models run."""

    device: torch.device  # the compute device
    dtype: torch.dtype  # weights and activations of the diffusion model


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; otherwise the named device (``cuda:1`` allowed)."""
    import torch

    name = (requested or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES[1:]:
        raise UsageError(f"unknown device {requested!r} (choose from auto, cuda, cuda:N, mps, cpu)")
    if base == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps was asked for but MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"bad device {requested!r}: {exc}") from None


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA, fp32 elsewhere; else fp32, fp16 or bf16 as named."""
    import torch

    name = (requested or "auto").lower()
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise UsageError(f"unknown dtype {requested!r} (choose from auto, fp32, fp16, bf16)")
    if table[name] == torch.float16 and device.type == "cpu":
        raise UsageError("--dtype fp16 is not supported on the CPU; use fp32 or bf16")
    return table[name]


def configure_backends(device: torch.device) -> None:
    """Enable TF32 matmuls on CUDA; SDPA attention is diffusers' default for torch >= 2."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def make_runtime(device: str = "auto", dtype: str = "auto") -> Runtime:
    """Resolve ``--device``/``--dtype`` into a :class:`Runtime` and set backend flags."""
    dev = pick_device(device)
    rt = Runtime(device=dev, dtype=pick_dtype(dtype, dev))
    configure_backends(dev)
    return rt


def cpu_runtime() -> Runtime:
    """fp32 on the CPU: what tests and the toy world use."""
    import torch

    return Runtime(device=torch.device("cpu"), dtype=torch.float32)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the source of all random numbers in caso."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


def randn(shape: tuple[int, ...], gen: torch.Generator, rt: Runtime) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``gen``, then moved to the runtime's device."""
    import torch

    return torch.randn(shape, generator=gen, dtype=torch.float32).to(rt.device, rt.dtype)
