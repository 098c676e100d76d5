"""Shared fixtures: a temporary CASO_HOME, offline hub, tiny seeded models on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest


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
def tiny_sd(tiny_model_dir: Path):
    """The tiny model loaded through caso's own loader, fp32 on the CPU."""
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import cpu_runtime

    return load_model(str(tiny_model_dir), cpu_runtime())
