"""Where caso keeps user data: ``$CASO_HOME``, else the platform's user data directory."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "caso"


def user_dir() -> Path:
    """The user data directory (registry, checkpoints). Created on first use."""
    env = os.environ.get("CASO_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """The cache directory (inversion cache). Under ``$CASO_HOME/cache`` when that is set."""
    env = os.environ.get("CASO_HOME")
    if env:
        path = Path(env).expanduser() / "cache"
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path
