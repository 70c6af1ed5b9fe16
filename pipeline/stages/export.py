"""`python -m pipeline export <method> [--out DIR]`: one method's model as a standalone open_clip folder.

The folder (default `exports/<method>/`) holds the teacher's frozen text tower with the method's
fine-tuned vision tower (`data/runs/<method>/visual.pt`), written with open_clip's own helpers
(`save_for_hf`: `open_clip_config.json`, `open_clip_model.safetensors`, the tokenizer files), and a
model card `README.md` (open_clip's `generate_readme`): method, data, the Δ table of the last
report, the params.yaml hash and the git commit. Plain open_clip loads it:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:exports/infuse")

A Hugging Face text tower given by a local folder (the embedded teacher's MiniLM, which configs
name symbolically) is made part of the export: its `config.json` and tokenizer files go into the
folder and `text_cfg.hf_model_name` names the folder, by absolute path, as transformers needs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.lib.models import LOCAL_DIR, MINILM, local_dir, local_dir_config, tokenizer_for
from pipeline.stages.encoders import load_teacher
from pipeline.lib.headlines import BASELINE, HEADLINES

CITATION = r"""@inproceedings{ypsilantis2025infusing,
  title     = {Infusing fine-grained visual knowledge to Vision-Language Models},
  author    = {Ypsilantis, Nikolaos-Antonios and Chen, Kaifeng and Araujo, Andr{\'e} and Chum, Ond{\v{r}}ej},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision Workshops (ICCVW)},
  year      = {2025},
  eprint    = {2508.12137},
  archivePrefix = {arXiv}
}"""  # the README's entry, word for word (tests/test_export_search.py)


def teacher_model_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config of the teacher, as open_clip itself would resolve its name."""
    import open_clip
    from open_clip.constants import HF_CONFIG_NAME

    name = spec["model"]
    if local_dir(name) is not None:
        return local_dir_config(local_dir(name))
    if name.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download
        return json.loads(Path(hf_hub_download(name.removeprefix("hf-hub:"), HF_CONFIG_NAME)).read_text())["model_cfg"]
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"open_clip has no config for teacher model '{name}'")
    tag = open_clip.get_pretrained_cfg(name, spec["pretrained"]) if spec.get("pretrained") else {}
    if tag.get("quick_gelu"):  # e.g. OpenAI weights: the architecture name alone does not say so
        cfg["quick_gelu"] = True
    return cfg


def local_text_folder(text_cfg: dict[str, Any]) -> bool:
    """Is the HF text tower named by a folder on this machine (not a hub id anyone can resolve)?"""
    name = text_cfg.get("hf_model_name")
    return bool(name) and (name == MINILM or Path(name).is_dir())


def export_model(model: torch.nn.Module, tokenizer: Any, model_cfg: dict[str, Any], folder: Path,
                 final_folder: Path) -> None:
    """Write `model` into `folder` (to be moved to `final_folder`) with open_clip's saving helpers."""
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
    from open_clip.push_to_hf_hub import save_config_for_hf, save_for_hf
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(model_cfg))  # a deep copy: the teacher's config stays as it is
    text_cfg = cfg.get("text_cfg", {})
    if local_text_folder(text_cfg):
        # transformers reads the architecture from `hf_model_name`: give it the export's own copy
        text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(final_folder.resolve())
        text_cfg.pop("hf_model_pretrained", None)
        model.text.config.save_pretrained(folder)
    for p in model.parameters():  # safetensors refuses views; the vision tower's loaded weights may be
        p.data = p.data.contiguous()
    if hasattr(tokenizer, "save_pretrained"):
        save_for_hf(model, tokenizer, cfg, folder, safe_serialization=True)
    else:  # open_clip's own BPE tokenizer ships with open_clip: there are no tokenizer files to write
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / HF_SAFE_WEIGHTS_NAME))
        save_config_for_hf(model, folder / HF_CONFIG_NAME, cfg)


def shareable(folder: Path) -> None:
    """Folder and files readable by others, as files a person copies (the staging folder is private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def delta_table(summary: dict[str, dict[str, float]], method: str, k: int) -> str:
    """Markdown: each headline metric of the pretrained model and of `method`, and the Δ."""
    row, base = summary[method], summary.get(BASELINE, {})
    lines = [f"| metric (points) | {BASELINE} | {method} | Δ |", "|---|---|---|---|"]
    for name, headline in HEADLINES.items():
        if name not in row:
            continue
        value, delta = row[name], row.get(f"delta_{name}")
        lines.append(f"| {headline.label} | {base.get(name, float('nan')):.2f} | {value:.2f} | "
                     + ("–" if delta is None else f"{delta:+.2f}") + " |")
    return "\n".join(lines) + (f"\n\nImage-image: mAP@{k} ×100; image-text: mean of I→T and T→I R@1 ×100; "
                               "zero-shot: accuracy (%). Δ = method − pretrained, on the test splits.\n")


def git_commit() -> str:
    """HEAD's commit, marked when the working tree has uncommitted changes; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def teacher_description(params: Params, spec: dict) -> str:
    """The teacher in words: the embedded one is a local folder whose path means nothing elsewhere."""
    if params.teacher.source == "embedded":
        v = params.teacher.vision
        return (f"embedded: a ViT ({v.image_size} px, patch {v.patch_size}, width {v.width}, {v.layers} layers) "
                "trained against the frozen all-MiniLM-L6-v2 sentence encoder")
    return f"`{spec['model']}`" + (f" (pretrained: {spec['pretrained']})" if spec.get("pretrained") else "")


def model_card(params: Params, method: str, summary: dict, spec: dict, params_file: Path, folder: Path) -> dict:
    """open_clip's model-card fields (`generate_readme`) for one exported method."""
    record = pio.read_json(paths.train_record(method))
    data = lambda name: f"{name} ({params.datasets[name].source})" if name in params.datasets else name  # noqa: E731
    return {
        "tags": ("clip", "image-retrieval", "fine-grained"),
        "pipeline_tag": "zero-shot-image-classification",
        "description": (f"The vision tower fine-tuned with method `{method}` on {data(params.roles.target)}, with "
                        "the teacher's frozen text tower: image embeddings for fine-grained image-to-image "
                        "retrieval that keep the teacher's general and image-text abilities."),
        "details": {
            "Method": method,
            "Method settings": {k: v for k, v in params.methods.get(method, {}).items()} or "the shared recipe",
            "Target data (fine-tuning)": data(params.roles.target),
            "Generic data (retention)": data(params.roles.generic),
            "Teacher": teacher_description(params, spec),
            "Selected checkpoint": f"step {record['selected']['step']} of {record['steps']} "
                                   f"(rule: {record['config']['select_on']})",
            "Experiment": params.experiment,
            "params.yaml sha256": hashlib.sha256(params_file.read_bytes()).hexdigest(),
            "Git commit": git_commit(),
        },
        "usage": ("```python\nimport open_clip, torch\nfrom PIL import Image\n\n"
                  f"model, _, preprocess = open_clip.create_model_and_transforms(\"{LOCAL_DIR}{folder}\")\n"
                  f"tokenizer = open_clip.get_tokenizer(\"{LOCAL_DIR}{folder}\")\nmodel.eval()\n"
                  "with torch.no_grad():\n"
                  "    image = model.encode_image(preprocess(Image.open(\"photo.jpg\")).unsqueeze(0), normalize=True)\n"
                  "    text = model.encode_text(tokenizer([\"a photo of a bird\"]), normalize=True)\n"
                  "print((image @ text.T).item())  # cosine similarity\n```\n"),
        "comparison": delta_table(summary, method, params.eval.k),
        "citation": CITATION,
    }


def main(args: argparse.Namespace) -> None:
    from open_clip.push_to_hf_hub import generate_readme

    params = load_params(args.params, args.overrides)
    method = args.method
    if method not in params.methods:
        raise ValueError(f"unknown method '{method}' (methods: {', '.join(params.methods)})")
    checkpoint = paths.checkpoint(method)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"missing {checkpoint}: run `dvc repro` (or `python -m pipeline finetune {method}`)")
    summary = pio.read_json(paths.metrics())["summary"]
    if method not in summary:
        raise ValueError(f"{paths.metrics()} has no results for '{method}': run `dvc repro` so the report includes it")
    dest = Path(args.out) if args.out else paths.export(method)
    if dest.exists() and not (dest / "open_clip_config.json").is_file():
        raise ValueError(f"{dest} exists and is not an export (no open_clip_config.json): choose another --out")
    model, spec = load_teacher("cpu")
    model.visual.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    tokenizer = tokenizer_for(spec["model"])
    card = model_card(params, method, summary, spec, Path(args.params), dest)
    with pio.atomic_path(dest, directory=True) as tmp:
        export_model(model.eval(), tokenizer, teacher_model_config(spec), tmp, dest)
        (tmp / "README.md").write_text(generate_readme(card, f"{params.experiment}-{method}"))
        shareable(tmp)
    print(f"[export {method}] {dest}/: open_clip.create_model_and_transforms(\"{LOCAL_DIR}{dest}\")")
