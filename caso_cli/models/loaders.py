"""Find and load a Stable Diffusion model the way diffusers users expect.

``--model`` (or ``$CASO_MODEL``) may be:

* a local alias (:func:`register_local_model`), such as ``toy``: the small toy-world model shipped
  inside caso (offline, CPU friendly), which the toy world's plug-in module :mod:`caso_cli.toyworld` registers;
* a local diffusers folder (``model_index.json`` and the component folders its family needs: SD 1.x/2.x
  ``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``);
* a single-file checkpoint (``.safetensors``; ``.ckpt`` only with ``allow_pickle``), with
  ``config`` naming a local diffusers folder (or cached hub id) that holds its configs;
* a Hugging Face hub id such as ``stable-diffusion-v1-5/stable-diffusion-v1-5``, resolved
  through the local Hugging Face cache first; downloaded only when ``HF_HUB_OFFLINE`` is unset.

The family (:mod:`caso_cli.families`, read from ``model_index.json``) lists and loads the components: the VAE,
the denoising network (a UNet; SD3's transformer), the scheduler and the text side; all are frozen, in eval mode,
with gradients off. Every failure is a :class:`ModelLoadError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caso_cli.errors import ModelLoadError, UsageError
from caso_cli.models.loaded import StableDiffusion
from caso_cli.plugins import Lookup

if TYPE_CHECKING:
    from caso_cli.families import Family
    from caso_cli.runtime import Runtime

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


HUB_TIMEOUT = 2.0  # seconds to wait for the hub before saying it is unreachable


def default_model() -> str:
    """``$CASO_MODEL`` if set, else the Stable Diffusion 1.5 hub id."""
    return os.environ.get("CASO_MODEL") or DEFAULT_MODEL


# ---- local aliases: short --model names for diffusers folders on this machine ----------------

#: alias -> its folder; plug-ins (the ``caso_cli.plugins`` entry points: the toy world's ``toy``) register theirs
#: when it is first looked up
_LOCAL_MODELS: Lookup[Callable[[], Path]] = Lookup()


def register_local_model(name: str, folder: str | Path | Callable[[], Path]) -> None:
    """Let ``--model name`` (and ``load_model(name, ...)``) load the diffusers folder ``folder``.

    ``folder`` may be a callable returning the folder, resolved at load time. An alias is looked up
    before paths and hub ids, so it wins over a folder of the same name in the working directory;
    a name with a ``/`` would shadow hub ids and is refused. Registering a name again replaces it.
    """
    _LOCAL_MODELS.load()  # built-in aliases first, so that a user's registration of the same name wins
    if not name or "/" in name or "\\" in name or any(ch.isspace() for ch in name):
        raise ValueError(f"a local model alias must be one word without slashes, got {name!r}")
    if callable(folder):
        _LOCAL_MODELS[name] = folder
    else:
        fixed = Path(folder).expanduser()
        _LOCAL_MODELS[name] = lambda: fixed


def local_model_names() -> list[str]:
    """The registered local aliases, sorted."""
    return sorted(_LOCAL_MODELS.load())


def local_model_dir(name: str) -> Path | None:
    """The folder registered as ``name``, or None when ``name`` is not a local alias."""
    factory = _LOCAL_MODELS.load().get(name)
    return None if factory is None else Path(factory())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _freeze(module: Any, runtime: Runtime) -> Any:
    module.requires_grad_(False)
    module.eval()
    if module.device != runtime.device or module.dtype != runtime.dtype:
        module = module.to(runtime.device, runtime.dtype)
    return module


def _channels_last(module: Any) -> Any:
    import torch

    return module.to(memory_format=torch.channels_last)


def quiet_libraries() -> None:
    """Silence diffusers/transformers info logs and their progress bars (caso shows its own)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import warnings

    # diffusers passes a deprecated argument to huggingface_hub on every lookup; the warning says nothing to a user
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)


def _finish(parts: dict[str, Any], family: type[Family], runtime: Runtime, name: str) -> StableDiffusion:
    try:
        schedule = family.schedule_of(parts["scheduler"])
    except ValueError as exc:
        raise ModelLoadError(f"{name}: {exc}") from exc
    net = family.net_part
    for key in ("vae", net, *family(parts).modules()):
        parts[key] = _freeze(parts[key], runtime)
    if runtime.channels_last:
        parts[net], parts["vae"] = _channels_last(parts[net]), _channels_last(parts["vae"])
    return StableDiffusion(vae=parts["vae"], net=parts[net], scheduler=parts["scheduler"], schedule=schedule,
                           runtime=runtime, name=name, family=family(parts))


def _family_of(source: str, local_only: bool) -> type[Family]:
    """The family named by the model's ``model_index.json`` (a folder's, or a hub id's through the cache)."""
    from caso_cli.families import family_for_pipeline, family_names, model_index

    try:
        class_name = model_index(source, local_only).get("_class_name")
    except ValueError as exc:  # not JSON, or not an object (a hub miss is an OSError, handled by the caller)
        raise ModelLoadError(f"{source}: unreadable model_index.json ({exc})") from exc
    family = family_for_pipeline(class_name)
    if family is None:
        raise ModelLoadError(f"{source}: a {class_name}, which caso cannot load (model families: "
                             f"{', '.join(family_names())})")
    return family


def _family_of_checkpoint(path: Path) -> type[Family]:
    """The family whose original layout a single-file checkpoint has (its tensor names; pickles: SD 1.x/2.x)."""
    from caso_cli.families import families, family_named

    keys: set[str] = set()
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as fh:
                keys = set(fh.keys())
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelLoadError(f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0]})") from exc
    return next((f for f in families() if f.matches_checkpoint(keys)), family_named(None))


def _load_components(source: str, runtime: Runtime, local_only: bool) -> tuple[dict[str, Any], type[Family]]:
    """Load each component from a diffusers folder or hub id (subfolders), and the model's family."""
    family = _family_of(source, local_only)
    return family.load_parts(source, runtime.dtype, local_only), family


def _load_single_file(path: Path, runtime: Runtime, config: str | None,
                      allow_pickle: bool) -> tuple[dict[str, Any], type[Family]]:
    """Load an original-layout (CompVis/LDM, A1111/ComfyUI) checkpoint with diffusers' single-file loader.

    ``config`` (a local diffusers folder or a hub id) holds the component configs; without it diffusers
    infers the model from the checkpoint's keys and fetches that model's configs (from the local
    cache only when offline). The weights of the UNet, VAE and text encoders come from the file. The family
    is the config's (SD 1.x/2.x without one).
    """
    import diffusers
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        from diffusers.loaders.single_file_utils import SingleFileComponentError
        component_errors: tuple[type[Exception], ...] = (SingleFileComponentError,)
    except ImportError:  # diffusers without this error class
        component_errors = ()

    if path.suffix.lower() in (".ckpt", ".pt", ".bin", ".pth") and not allow_pickle:
        raise UsageError(
            f"{path}: legacy pickle checkpoints can run code when loaded; convert it to .safetensors "
            "or pass --allow-pickle if you trust its source")
    source = config
    if config:
        local = Path(config).expanduser()
        if local.is_dir():
            if not (local / "model_index.json").is_file():
                raise ModelLoadError(f"{config}: not a diffusers model folder (no model_index.json); "
                                     "--model-config needs the configs of the checkpoint's model")
            source = str(local)
        elif local.exists() or config.startswith((".", "/", "~")) or config.count("/") > 1 or "\\" in config:
            raise ModelLoadError(f"{config}: no such config folder (--model-config takes a local diffusers "
                                 "folder or a hub id)")
    configs = f"the configs in {config!r}" if config else "the configs diffusers infers from its keys"
    kwargs: dict[str, Any] = {"torch_dtype": runtime.dtype,
                              "local_files_only": _offline() or config is not None}
    try:
        family = _family_of(source, local_only=True) if source else _family_of_checkpoint(path)
        pipeline = getattr(diffusers, family.pipelines[0])
        # The optional parts are passed as None so that diffusers neither loads nor needs them.
        pipe = pipeline.from_single_file(str(path), config=source, **family.single_file_extras, **kwargs)
    except component_errors as exc:
        first = str(getattr(exc, "message", None) or exc).strip().splitlines()[0]
        raise ModelLoadError(f"{path}: {first} Is it a Stable Diffusion checkpoint in the original (LDM) "
                             f"layout that matches {configs}?") from exc
    except LocalEntryNotFoundError as exc:
        what = f"model {config!r}" if config else "the model this checkpoint looks like"
        raise ModelLoadError(
            f"{path}: the configs of {what} are not in the local Hugging Face cache"
            + (" and HF_HUB_OFFLINE is set" if _offline() else "")
            + "; pass --model-config with a local diffusers folder of the same model") from exc
    except RuntimeError as exc:
        if "meta" not in str(exc):
            raise
        raise ModelLoadError(f"{path}: the checkpoint lacks weights that {configs} call for; is it the same "
                             "model?") from exc
    parts = family.from_pipeline(pipe)
    # diffusers builds the models with empty (meta) weights and fills in what the file has: refuse leftovers.
    empty = [name for name in (family.net_part, "vae", *family(parts).modules())
             if any(t.is_meta for t in (*parts[name].parameters(), *parts[name].buffers()))]
    if empty:
        raise ModelLoadError(f"{path}: the checkpoint lacks {', '.join(empty)} weights that {configs} "
                             "call for; is it the same model?")
    return parts, family


def _how_to_get(model: str, why: str | None = None) -> str:
    if why is None:
        why = "HF_HUB_OFFLINE is set" if _offline() else "could not be downloaded"
    aliases = local_model_names()
    return (f"model {model!r} is not in the local Hugging Face cache and {why}; download it with "
            f"`hf download {model}` on a machine with network access, or pass a local diffusers folder or "
            ".safetensors file with --model" + (f" (offline: --model {aliases[0]})" if aliases else ""))


def hub_endpoint() -> tuple[str, int]:
    """Host and port of the Hugging Face hub (``HF_ENDPOINT`` or huggingface.co)."""
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (no retries)."""
    import socket

    try:
        with socket.create_connection(hub_endpoint(), timeout=timeout):
            return True
    except OSError:
        return False


def load_model(model: str | None, runtime: Runtime, config: str | None = None,
               allow_pickle: bool = False) -> StableDiffusion:
    """Load the Stable Diffusion components named by ``model`` (see the module docstring)."""
    name = model or default_model()
    quiet_libraries()
    try:
        folder = local_model_dir(name)
        if folder is not None:
            if not (folder / "model_index.json").is_file():
                raise ModelLoadError(f"the {name} model is missing from this installation ({folder})")
            return _finish(*_load_components(str(folder), runtime, local_only=True), runtime, name)
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(f"{path}: not a diffusers model folder (missing model_index.json)")
            family = _family_of(str(path), local_only=True)
            missing = [c for c in family.components() if not (path / c).is_dir()]
            if missing:
                raise ModelLoadError(f"{path}: not a diffusers {family.title} folder (missing "
                                     f"{', '.join(missing)})")
            return _finish(family.load_parts(str(path), runtime.dtype, True), family, runtime, name)
        if path.is_file():
            return _finish(*_load_single_file(path, runtime, config, allow_pickle), runtime, name)
        if name.startswith((".", "/", "~")) or name.endswith((".safetensors", ".ckpt")) or name.count("/") > 1:
            raise ModelLoadError(f"{name}: no such model file or folder")
        try:
            parts, family = _load_components(name, runtime, local_only=True)
        except OSError as exc:
            if _offline():
                raise ModelLoadError(_how_to_get(name)) from exc
            if not hub_reachable():  # say so at once instead of five silent retries of each file
                host, port = hub_endpoint()
                raise ModelLoadError(_how_to_get(name, f"the hub ({host}:{port}) is unreachable")) from exc
            try:
                parts, family = _load_components(name, runtime, local_only=False)
            except OSError as exc:
                raise ModelLoadError(_how_to_get(name)) from exc
        return _finish(parts, family, runtime, name)
    except (ModelLoadError, UsageError):
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {name!r}: {first}") from exc


def enable_grad_checkpointing(sd: StableDiffusion, enable: bool = True) -> None:
    """Recompute network and VAE activations in the backward pass instead of keeping them (less memory, ~30%
    slower)."""
    for module in (sd.net, sd.vae):
        if enable:
            module.enable_gradient_checkpointing()
        else:
            module.disable_gradient_checkpointing()


def compile_net(sd: StableDiffusion) -> None:
    """Compile the network's forward in place with ``torch.compile`` (opt-in: the first steps pay for
    compilation)."""
    import sys

    import torch

    if not hasattr(torch, "compile") or sys.platform == "win32":
        raise UsageError("--compile needs torch.compile (torch >= 2.0, not on Windows)")
    sd.net.compile()
