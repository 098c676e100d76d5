"""Device, dtype and seed decisions."""

from __future__ import annotations

import pytest
import torch

from caso_cli.errors import UsageError
from caso_cli.runtime import cpu_runtime, generator, make_runtime, pick_device, pick_dtype, randn


def test_auto_device_on_this_machine_is_cpu_and_fp32() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA machine")
    rt = make_runtime()
    assert rt.device.type == "cpu" and rt.dtype == torch.float32


def test_auto_dtype_is_fp16_on_cuda_fp32_elsewhere() -> None:
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("mps")) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert pick_dtype("fp32", torch.device("cuda")) == torch.float32


def test_bad_device_and_dtype_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown device"):
        pick_device("tpu")
    with pytest.raises(UsageError, match="unknown dtype"):
        pick_dtype("fp8", torch.device("cpu"))
    with pytest.raises(UsageError, match="not supported on the CPU"):
        pick_dtype("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_seeded_noise_is_drawn_on_cpu_and_repeatable() -> None:
    rt = cpu_runtime()
    a = randn((2, 4, 8, 8), generator(7), rt)
    b = randn((2, 4, 8, 8), generator(7), rt)
    c = randn((2, 4, 8, 8), generator(8), rt)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the same numbers as torch.randn on a CPU generator, whatever the target device
    ref = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, ref)
    assert generator(7).device.type == "cpu"
