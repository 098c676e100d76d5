"""caso: edit images with Stable Diffusion through classifier-learned semantic embeddings.

The library API, for ``import caso_cli``::

    import caso_cli as caso

    sd = caso.load_model("toy", caso.make_runtime())
    data = caso.load_labelled("faces/", labels="list_attr.txt", attr="Mustache")
    clf, report = caso.fit_classifier(data, caso.FitConfig(attr="mustache"), sd.runtime)
    result = caso.learn_embedding(sd, clf, images, caso.LearnConfig(steps=200))
    caso.save_embedding("mustache", result.vectors, {"classes": clf.classes, "model": sd.name})
    cond = sd.family.encode_vectors(result.vectors[1:])  # a Condition: what the network reads for <mustache>
    edited = caso.edit_latents(sd, caso.invert_latents(sd, z0, config), caso.cfg_guidance(sd, cond, 5.0), config)

Importing this package is cheap: torch and diffusers load only when one of these names is
first used (no typer, no printing in any of them).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "FitConfig": "caso_cli.config",
    "LearnConfig": "caso_cli.config",
    "EditConfig": "caso_cli.config",
    "EvalConfig": "caso_cli.config",
    "make_runtime": "caso_cli.runtime",
    "load_model": "caso_cli.models.loaders",
    "load_labelled": "caso_cli.io.datasets",
    "fit_classifier": "caso_cli.pipelines.classifier_fit",
    "load_classifier": "caso_cli.models.classifier",
    "save_classifier": "caso_cli.models.classifier",
    "learn_embedding": "caso_cli.pipelines.learn",
    "save_embedding": "caso_cli.registry",
    "load_embedding": "caso_cli.registry",
    "Condition": "caso_cli.families",
    "register_family": "caso_cli.families",
    "invert_latents": "caso_cli.pipelines.edit",
    "edit_latents": "caso_cli.pipelines.edit",
    "cfg_guidance": "caso_cli.pipelines.guidance",
    "generate_latents": "caso_cli.pipelines.generate",
    "encode_images": "caso_cli.pipelines.generate",
    "decode_latents": "caso_cli.pipelines.generate",
    "pair_by_name": "caso_cli.eval.pairing",
    "evaluate": "caso_cli.eval.evaluate",
    "write_report": "caso_cli.eval.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'caso_cli' has no attribute {name!r}")
