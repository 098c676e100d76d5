"""The toy world: procedural faces with exactly known attributes, their oracle and the small model.

The toy world uses caso like any other user of the library: importing this package registers

* the local model aliases ``toy`` (``--model toy``, the second-generation model, :data:`MODEL_DIR`) and ``toy-v1``
  (the first model, kept loadable until every documented result is re-run on ``toy``): diffusers folders shipped
  here (:func:`caso_cli.models.loaders.register_local_model`), each with its caption grammar (:data:`MODELS`);
* the oracle ``toy`` (``caso eval --oracle toy``): :func:`caso_cli.toyworld.oracle.eval_oracle`
  (:func:`caso_cli.eval.oracles.register_oracle`);
* how each toy model's captions name a classifier's classes (:data:`caso_cli.contexts.PHRASEBOOKS`) and the
  contexts they put around an attribute (:data:`caso_cli.contexts.CAPTION_CONTEXTS`).

It is the module of the ``caso_cli.plugins`` entry point ``toy`` (pyproject.toml), which every lookup imports on its
first use, so ``toy`` works without importing it first; importing it is cheap (no numpy, no torch). Its commands
(``caso demo``, ``caso toyworld``) come through the ``caso_cli.commands`` entry point: :mod:`caso_cli.toyworld.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caso_cli.eval.oracles import Oracle

MODEL_NAME = "toy"
_HERE = Path(__file__).resolve().parent
#: The toy model: a standard diffusers Stable Diffusion folder shipped in the package.
MODEL_DIR = _HERE / "model"
#: alias -> folder (each model's caption grammar: :data:`caso_cli.toyworld.captions.MODEL_GRAMMARS`)
MODELS: dict[str, Path] = {MODEL_NAME: MODEL_DIR, "toy-v1": _HERE / "model-v1"}


def _oracle() -> Oracle:
    from caso_cli.toyworld.oracle import eval_oracle

    return eval_oracle()


def _phrasebook(model: str):  # noqa: ANN202 - a (attribute, class) -> words function
    def phrase(attribute: str, cls: str) -> str | None:
        """How the toy captions name a classifier's class ("no_mustache" -> "no mustache", "red" -> "red hair")."""
        from caso_cli.toyworld.captions import class_label, for_model

        grammar = for_model(model)
        found = None if grammar is None else class_label(attribute, cls, grammar)
        return None if grammar is None or found is None else grammar.phrase(*found)

    return phrase


def _caption_contexts(model: str):  # noqa: ANN202 - an attribute -> contexts function
    def contexts(attribute: str | None) -> tuple[str, ...] | None:
        """The toy captions around ``attribute`` (None: not a toy attribute)."""
        from caso_cli.toyworld import captions

        grammar = captions.for_model(model) or captions.DEFAULT
        attr = captions.caption_attribute(attribute, grammar)
        return None if attr is None else captions.contexts(attr, grammar=grammar)

    return contexts


def _register() -> None:
    from caso_cli.contexts import CAPTION_CONTEXTS, PHRASEBOOKS
    from caso_cli.eval.oracles import register_oracle
    from caso_cli.models.loaders import register_local_model

    for name, folder in MODELS.items():
        register_local_model(name, folder)
        PHRASEBOOKS[name] = _phrasebook(name)
        CAPTION_CONTEXTS[name] = _caption_contexts(name)
    register_oracle("toy", _oracle)


_register()
