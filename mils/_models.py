"""`mils models pull | list`: real CLIP-family scorers in a model repository of your own.

`mils models pull NAME` downloads a transformers CLIP or SigLIP checkpoint from the Hugging
Face hub (or copies a checkpoint folder you already have) into `./.mils/models/_weights/`,
and writes a Triton model pair for it beside: `<alias>_text` and `<alias>_image`, the shipped
`clip_text` / `clip_image` code with `model_name_or_path` pointing at those weights. `mils
local up` serves that repository next to the shipped one and loads every pair in it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from mils._local import PULLED_DIR, model_repository, pulled_models
from mils.engine import ConfigError

__all__ = ["SUPPORTED_MODEL_TYPES", "cmd_models", "pull"]

SUPPORTED_MODEL_TYPES = ("clip", "siglip", "siglip2")
"""transformers `model_type`s that `clip_text` / `clip_image` load (AutoModel with
get_text_features / get_image_features, a tokenizer and an image processor)."""
_WEIGHT_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]
_HUB_TIMEOUT_S = 10.0
_TOWERS = {"text": "clip_text", "image": "clip_image"}


def _alias(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.rstrip("/").rsplit("/", 1)[-1].lower()).strip("_")


def _check_checkpoint(folder: Path, name: str) -> str:
    """The checkpoint's model_type, or ConfigError saying what is wrong with `folder`."""
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{name}: no readable config.json in {folder} ({exc})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{name} is a {model_type!r} model; mils scores with CLIP-family dual encoders: "
            f"model_type one of {', '.join(SUPPORTED_MODEL_TYPES)} (e.g. "
            "openai/clip-vit-base-patch32, google/siglip-base-patch16-224)"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ConfigError(f"{name}: no weights (*.safetensors or *.bin) in {folder}")
    return str(model_type)


def _download(name: str, dest: Path) -> None:
    """Fetch hub checkpoint `name` into `dest`; fails at once when the hub is unreachable."""
    try:
        import huggingface_hub
        from huggingface_hub.constants import ENDPOINT
    except ImportError:
        raise ConfigError(
            "downloading needs huggingface_hub: pip install 'mils[clip]'; or pass the folder "
            "of a checkpoint you already have instead of a hub name"
        ) from None
    try:
        huggingface_hub.model_info(name, timeout=_HUB_TIMEOUT_S)
        dest.parent.mkdir(parents=True, exist_ok=True)
        huggingface_hub.snapshot_download(
            name, local_dir=dest, allow_patterns=_WEIGHT_PATTERNS, etag_timeout=_HUB_TIMEOUT_S
        )
    except Exception as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ConfigError(
            f"cannot download {name} from {ENDPOINT} ({type(exc).__name__}: {exc}). "
            "Offline? On a machine with access run `hf download "
            f"{name} --local-dir DIR`, copy DIR here and run `mils models pull DIR`; "
            "behind a mirror set HF_ENDPOINT"
        ) from None


def pull(name: str, *, alias: str | None = None, into: Path = PULLED_DIR) -> tuple[str, str]:
    """Install checkpoint `name` (a hub id or a local folder) as a Triton model pair in the
    repository `into`; returns the (text model, image model) names."""
    alias = alias or _alias(name)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", alias):
        raise ConfigError(f"alias {alias!r}: use lower-case letters, digits and _ (--as NAME)")
    weights = into / "_weights" / alias
    staging = weights.with_name(weights.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    source = Path(name).expanduser()
    if source.is_dir():
        _check_checkpoint(source, name)
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(source, staging)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ConfigError(
                f"cannot copy {name} into {staging.parent}: {exc}; check that every file of "
                "the folder is readable and the disk has room"
            ) from None
    else:
        if source.exists() or name.startswith((".", "/", "~")):
            raise ConfigError(f"{name} is not a checkpoint folder; pass a folder or a hub name")
        _download(name, staging)
        try:
            _check_checkpoint(staging, name)
        except ConfigError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
    shutil.rmtree(weights, ignore_errors=True)
    staging.rename(weights)

    shipped = model_repository()
    shutil.copytree(shipped / "_common", into / "_common", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    names = []
    for tower, template in _TOWERS.items():
        model = f"{alias}_{tower}"
        folder = into / model
        (folder / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(shipped / template / "1" / "model.py", folder / "1" / "model.py")
        config = (shipped / template / "config.pbtxt").read_text(encoding="utf-8")
        config = config.replace(f'name: "{template}"', f'name: "{model}"')
        config = re.sub(r"# A local folder.*\n.*\n", "", config)
        config = re.sub(
            r'(key: "model_name_or_path", value: \{ string_value: )"[^"]*"',
            lambda m: f"{m.group(1)}{json.dumps(str(weights.resolve()))}",
            config,
        )
        config += 'parameters { key: "pinned", value: { string_value: "true" } }\n'
        (folder / "config.pbtxt").write_text(
            f"# Installed by `mils models pull {name}`; pinned: MILS_CLIP_MODEL does not "
            f"apply.\n{config}",
            encoding="utf-8",
        )
        names.append(model)
    return names[0], names[1]


def cmd_models(args: argparse.Namespace) -> int:
    """Install or list CLIP-family scorers in the local model repository."""
    if args.action == "list":
        models = pulled_models(args.into)
        for model in models:
            print(model)
        if not models:
            print(f"no models in {args.into}; `mils models pull NAME` installs one")
        return 0
    if not args.name:
        raise ConfigError("which model? `mils models pull openai/clip-vit-base-patch32`")
    text, image = pull(args.name, alias=args.alias, into=args.into)
    print(
        f"installed {text} and {image} in {args.into}; `mils local up` serves them (run "
        "`mils local down` first if the stack is up). Then:\n"
        f"  mils caption IMAGES --text-model {text} --image-model {image}"
    )
    return 0
