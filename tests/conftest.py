"""Shared fixtures: a temporary CASO_HOME, offline hub, tiny seeded models on the CPU (the helpers behind them, and
the others that several test modules use, are in tests/tiny.py).

The session runs torch at one CPU thread (``$CASO_THREADS`` to choose another count): on 2 cores that another
process also uses, torch's default count collapses (measured: tests/test_learn.py took 70-72 s at the default 2 threads
against 15-19 s at one thread; on idle cores 2 threads gain little, 13-15 s against 15-16 s), and a fixed count also
keeps the learned bits the same from run to run (see :func:`caso_cli.runtime.pin_threads`). Tests that start another
python set its OMP_NUM_THREADS themselves.
"""

from __future__ import annotations

import itertools
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


@pytest.fixture(scope="session")
def _env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("env")


_env_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _isolated_env(_env_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty CASO_HOME and HF_HOME of the test's own, offline: plain folders under one session folder, where two
    tmp_path_factory.mktemp calls per test each scanned an ever longer listing (about 1 ms a test)."""
    env = _env_root / str(next(_env_numbers))
    (env / "caso_home").mkdir(parents=True)
    (env / "hf_home").mkdir()
    monkeypatch.setenv("CASO_HOME", str(env / "caso_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(env / "hf_home"))
    monkeypatch.delenv("CASO_MODEL", raising=False)
    monkeypatch.delenv("CASO_DEBUG", raising=False)


@pytest.fixture(scope="session")
def tiny_components() -> dict:
    """The tiny Stable Diffusion's components (random weights, seed 0): read them, never change them."""
    from tests.tiny import tiny_components as build

    return build()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_components: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Stable Diffusion (:func:`tiny_components`) saved as a diffusers folder."""
    from caso_cli.models.build import save_pipeline_folder

    return save_pipeline_folder(tiny_components, tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_xl_components() -> dict:
    """The tiny SDXL's components (random weights, seed 0): read them, never change them."""
    from tests.tiny import tiny_xl_components as build

    return build()


@pytest.fixture(scope="session")
def tiny_xl_dir(tiny_xl_components: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL (:func:`tiny_xl_components`) saved as a diffusers folder (force_zeros_for_empty_prompt)."""
    from caso_cli.models.build import save_pipeline_folder

    return save_pipeline_folder(tiny_xl_components, tmp_path_factory.mktemp("tiny_xl"))


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


@pytest.fixture()
def clf_file(tmp_path: Path) -> Path:
    """A seeded tiny mustache classifier file (widths 8, 16), for `caso eval`."""
    from tests.tiny import tiny_classifier_file

    return tiny_classifier_file(tmp_path / "m.safetensors", ("no_mustache", "mustache"), 0, "mustache", (8, 16))
