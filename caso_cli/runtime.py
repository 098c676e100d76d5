"""The one place that decides device, dtype, seeds, backend settings and the process layout.

Nothing else in caso picks a device: pipelines receive a :class:`Runtime`.
Random numbers always come from a CPU ``torch.Generator`` (see :func:`randn`), so one
seed gives the same noise, and the same result up to kernel differences, on any device.

Under ``accelerate launch`` (``WORLD_SIZE`` > 1 in the environment) :func:`make_runtime` lets
accelerate set up the process group (NCCL on CUDA, gloo on the CPU) and each process gets its
own device; a plain run never imports accelerate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from caso_cli.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision models run."""

    device: torch.device  # the compute device
    dtype: torch.dtype  # weights and activations of the diffusion model
    rank: int = 0  # this process's index under accelerate launch
    world_size: int = 1  # number of processes under accelerate launch
    channels_last: bool = False  # UNet and VAE convolutions in NHWC memory format (faster on CUDA)

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, registry entries and messages."""
        return self.rank == 0


def launched_processes() -> int:
    """How many processes ``accelerate launch`` (or torchrun) started: ``WORLD_SIZE``, 1 when unset."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """False only in a non-zero rank of a launched run (read from the environment, no torch import)."""
    return launched_processes() == 1 or os.environ.get("RANK", "0") == "0"


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
        raise UsageError(f"bad device {requested!r}: {exc}") from exc


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
    """Resolve ``--device``/``--dtype`` into a :class:`Runtime` and set backend flags.

    channels_last is used on CUDA only. Under ``accelerate launch`` the process group is
    initialised here and each process takes ``cuda:<local rank>`` (or the CPU, with gloo).
    """
    import torch

    dev = pick_device(device)
    rank, world = 0, 1
    if launched_processes() > 1:
        from accelerate import PartialState

        state = PartialState(cpu=dev.type == "cpu")
        if state.num_processes > 1:
            rank, world = state.process_index, state.num_processes
            dev = torch.device("cpu") if state.device.type == "cpu" else state.device
    rt = Runtime(device=dev, dtype=pick_dtype(dtype, dev), rank=rank, world_size=world,
                 channels_last=dev.type == "cuda")
    configure_backends(dev)
    return rt


THREADS_ENV = "CASO_THREADS"  # the CPU thread count of runs whose numbers must repeat (see pin_threads)
# CPU learning and classifier fitting run at one thread unless told otherwise (bench/threads.py, docs/performance.md
# "Threads"): on 2 cores that other work also uses, 1 thread learned 1.6x (median) to 10x (worst run) faster than 2,
# while on idle cores it costs 1.45x (the whole demo: 81 s against 62 s); and one count on every machine keeps the
# learned bits the same whatever the load or the number of cores.
LEARN_THREADS = 1


def _threads_from_env() -> int | None:
    """The count the user chose: ``$CASO_THREADS``, else ``$OMP_NUM_THREADS`` (which torch applied itself)."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                return int(raw)
            except ValueError as exc:
                raise UsageError(f"{name}={raw!r} is not a number of threads") from exc
    return None


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(sample_s: float = 0.1) -> int:
    """How many of this process's cores other work leaves free right now (at least 1): the idle share of all CPUs
    over ``sample_s`` seconds from /proc/stat, else the 1-minute load average, else all of them."""
    import time

    cores = cpu_count()

    def idle_total() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])

    try:
        idle0, total0 = idle_total()
        time.sleep(sample_s)
        idle1, total1 = idle_total()
        idle_share = (idle1 - idle0) / max(1, total1 - total0)
        busy = (os.cpu_count() or cores) * (1.0 - idle_share)  # /proc/stat counts every CPU of the machine
    except (OSError, ValueError, IndexError):
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def pin_threads(threads: int | None = None, learning: bool = True) -> int:
    """Fix torch's CPU thread count for this run, and return it (record it with results whose bits must repeat).

    On the CPU some kernels split their sums by thread, so the thread count changes results in the last bits.
    Edits: latents by ~3e-6 on the toy model, a rare one-level step in 8-bit pixels (tests/test_runtime.py).
    Learning: the same data, seed and settings give bit-identical vectors at one thread count and others at
    another, and AdamW's normalised first steps and the classifier fit turn those bits into a different embedding
    (measured on the toy world: a classifier fitted at 1 vs 2 threads differs by ~1e-3, and the vectors learned
    from it by ~0.1 after 60 steps, as much as another seed). ``threads``, else ``$CASO_THREADS``, else
    ``$OMP_NUM_THREADS``, else for learning :data:`LEARN_THREADS` and for no-grad work the cores free right now
    (:func:`free_cores`).
    """
    import torch

    if threads is None:
        threads = _threads_from_env()
    if threads is None:
        threads = LEARN_THREADS if learning else free_cores()
    if threads < 1:
        raise UsageError(f"the thread count must be 1 or more, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def all_reduce_sum(tensor: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """The sum of ``tensor`` over the launched processes (``tensor`` itself in a single process)."""
    if rt.world_size == 1:
        return tensor
    from accelerate.utils import reduce

    return reduce(tensor, reduction="sum")


def wait_for_everyone(rt: Runtime) -> None:
    """A barrier across the launched processes; nothing in a single process."""
    if rt.world_size > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def peak_memory(device: torch.device) -> dict[str, float | str]:
    """Peak memory of this process so far: CUDA allocations on a CUDA device, else the resident set (RSS)."""
    import sys

    import torch

    if device.type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_memory_of": "cuda_allocated"}
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1),
            "peak_memory_of": "rss"}


def needs_fp32_decode(x: torch.Tensor, vae_dtype: torch.dtype) -> torch.Tensor:
    """Rows of a half-precision VAE decode that hold NaN/inf and should be decoded again in fp32."""
    import torch

    if vae_dtype == torch.float32:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return ~torch.isfinite(x).flatten(1).all(1)


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
