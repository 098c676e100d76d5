"""Shared fixtures: a temporary CASO_HOME, offline hub, tiny seeded models on the CPU.

The session runs torch at one CPU thread (``$CASO_THREADS`` to choose another count): on 2 cores that another
process also uses, torch's default count collapses (measured: tests/test_learn.py took 70-72 s at the default 2 threads
against 15-19 s at one thread; on idle cores 2 threads gain little, 13-15 s against 15-16 s), and a fixed count also
keeps the learned bits the same from run to run (see :func:`caso_cli.runtime.pin_threads`). Tests that start another
python set its OMP_NUM_THREADS themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TEST_THREADS = 1  # torch's CPU threads in the test session unless $CASO_THREADS says otherwise


def pytest_configure(config: pytest.Config) -> None:
    from caso_cli.errors import UsageError
    from caso_cli.runtime import THREADS_ENV, pin_threads

    try:
        pin_threads(None if os.environ.get(THREADS_ENV, "").strip() else TEST_THREADS)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str:
    import torch

    return f"torch CPU threads: {torch.get_num_threads()} (tests/conftest.py; CASO_THREADS=N for another count)"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASO_HOME", str(tmp_path_factory.mktemp("caso_home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.delenv("CASO_MODEL", raising=False)
    monkeypatch.delenv("CASO_DEBUG", raising=False)


@pytest.fixture(scope="session")
def tiny_components() -> dict:
    from tests.tiny import tiny_components as build

    return build()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion saved as a diffusers folder (random weights, seed 0)."""
    from caso_cli.models.build import save_pipeline_folder
    from tests.tiny import tiny_components as build

    return save_pipeline_folder(build(), tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_xl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL saved as a diffusers folder (random weights, seed 0, force_zeros_for_empty_prompt)."""
    from caso_cli.models.build import save_pipeline_folder
    from tests.tiny import tiny_xl_components

    return save_pipeline_folder(tiny_xl_components(), tmp_path_factory.mktemp("tiny_xl"))


@pytest.fixture(scope="session")
def tiny_xl(tiny_xl_dir: Path):
    """The tiny SDXL loaded through caso's own loader, fp32 on the CPU."""
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import cpu_runtime

    return load_model(str(tiny_xl_dir), cpu_runtime())


@pytest.fixture(scope="session")
def tiny_sd(tiny_model_dir: Path):
    """The tiny model loaded through caso's own loader, fp32 on the CPU."""
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import cpu_runtime

    return load_model(str(tiny_model_dir), cpu_runtime())
