"""The toy world: procedural faces with exactly known attributes, their oracle and the small model.

The toy world uses caso like any other user of the library: importing this package registers

* the local model alias ``toy`` (``--model toy``): the diffusers folder :data:`MODEL_DIR` shipped
  here (:func:`caso_cli.models.loaders.register_local_model`);
* the oracle ``toy`` (``caso eval --oracle toy``): :func:`caso_cli.toyworld.oracle.eval_oracle`
  (:func:`caso_cli.oracles.register_oracle`).

Both lookups import this package on their first use, so ``toy`` works without importing it first.
Importing it is cheap (no numpy, no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caso_cli.oracles import Oracle

MODEL_NAME = "toy"
#: The toy model: a standard diffusers Stable Diffusion folder shipped in the package.
MODEL_DIR = Path(__file__).resolve().parent / "model"


def _oracle() -> Oracle:
    from caso_cli.toyworld.oracle import eval_oracle

    return eval_oracle()


def _phrase(attribute: str, cls: str) -> str | None:
    """How the toy captions name a classifier's class ("no_mustache" -> "no mustache", "red" -> "red hair")."""
    from caso_cli.toyworld.captions import phrase
    from caso_cli.toyworld.render import ATTRIBUTES

    if attribute not in ATTRIBUTES:
        return None
    classes = [c.lower() for c in ATTRIBUTES[attribute]]
    if attribute == "hair":
        return phrase("hair", classes.index(cls.lower())) if cls.lower() in classes else None
    return phrase(attribute, 0 if cls.lower().startswith(("no_", "not_")) else 1)


def _register() -> None:
    from caso_cli.contexts import PHRASEBOOKS
    from caso_cli.models.loaders import register_local_model
    from caso_cli.oracles import register_oracle

    register_local_model(MODEL_NAME, MODEL_DIR)
    register_oracle("toy", _oracle)
    PHRASEBOOKS[MODEL_NAME] = _phrase


_register()
