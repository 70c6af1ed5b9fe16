"""Stage `teacher`: the pretrained vision-language model everything is measured against.

- `teacher.source=open_clip`: a real pretrained model (`teacher.model` + `teacher.pretrained`), only
  loaded here to check it and record its preprocessing; the spec names it for the later stages.
- `teacher.source=embedded` (offline default): no pretrained CLIP weights are installable, so we
  build one. Its text tower is the genuinely pretrained MiniLM sentence encoder, kept frozen; its
  small ViT is trained contrastively against MiniLM's embeddings of the captions of the generic
  "web" data (train split). The result is an open_clip `local-dir:` model with real image-text
  alignment, whose zero-shot accuracy goes to `reports/teacher.json`.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.lib import losses
from pipeline.lib.data import ImageDataset, StepBatches, iterate_batches, normalize, random_crop_flip, step_generator
from pipeline.lib.evaluation import zero_shot
from pipeline.lib.prompts import class_prompts
from pipeline.lib.models import (EMBEDDED_MEAN, EMBEDDED_STD, LOCAL_DIR, create_embedded_clip, embed_images, embed_texts,
                                 embedded_model_cfg, image_mean_std, image_size_of, resolve_device, set_threads,
                                 tokenizer_for, vision_params)
from pipeline.stages.common import TEACHER_SPEC, image_sources, split_frame
from pipeline.lib.embedding import View, embed_sources



def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (a multiplier of the base LR)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def caption_table(frame: pl.DataFrame) -> tuple[list[str], list[np.ndarray]]:
    """Unique captions and, per image, the ids of its captions."""
    vocab: dict[str, int] = {}
    per_image = [np.array([vocab.setdefault(c, len(vocab)) for c in caps], np.int64)
                 for caps in frame["captions"].to_list()]
    return list(vocab), per_image


def train_embedded(params: Params, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Contrastive training of the vision tower against frozen MiniLM caption embeddings."""
    cfg, arch = params.teacher, params.teacher.vision
    model_cfg = embedded_model_cfg(arch.image_size, arch.patch_size, arch.width, arch.layers, arch.head_width)
    torch.manual_seed(params.seed)
    model = create_embedded_clip(model_cfg).to(device)
    model.text.requires_grad_(False).eval()  # the text tower is pretrained and stays frozen

    frame = split_frame(params, cfg.corpus, "train", columns=["image", "path", "captions"])
    captions, caption_ids = caption_table(frame)
    tokenizer = tokenizer_for_embedded(model_cfg)
    text_emb = torch.from_numpy(embed_texts(model, tokenizer, captions, device=device)).to(device)

    resize = round(arch.image_size * 8 / 7)  # the reference's 256→224 ratio
    dataset = ImageDataset(image_sources(cfg.corpus, frame), resize, "train")
    sampler = StepBatches(len(dataset), cfg.batch_size, params.seed)
    visual = model.visual.train()
    optimizer = torch.optim.AdamW(vision_params(visual), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    history, start = [], time.time()
    bar = tqdm(iterate_batches(dataset, sampler, range(cfg.steps), params.runtime.num_workers),
               total=cfg.steps, desc="teacher", unit="step")
    for step, (images, idx) in enumerate(bar):
        gen = step_generator(params.seed, step, stream=1)
        x = normalize(random_crop_flip(images, arch.image_size, gen, hflip=False).to(device), EMBEDDED_MEAN,
                      EMBEDDED_STD)
        pick = [ids[torch.randint(len(ids), (1,), generator=gen).item()] for ids in (caption_ids[i] for i in idx)]
        cap = torch.tensor(pick, device=device)
        loss = losses.gift_alignment_loss(embed_images(visual, x), text_emb[cap], cap, cfg.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            history.append({"step": step, "loss": round(loss.item(), 4)})
    model.eval()
    info = {"model_cfg": model_cfg, "train_seconds": round(time.time() - start, 1), "history": history,
            "captions": len(captions), "train_images": len(dataset)}
    return model, info


def tokenizer_for_embedded(model_cfg: dict):
    import open_clip

    from pipeline.lib.models import minilm_path
    return open_clip.tokenizer.HFTokenizer(minilm_path(), context_length=model_cfg["text_cfg"]["context_length"])


def save_local_dir(model: torch.nn.Module, model_cfg: dict, folder, image_size: int) -> None:
    """Write an open_clip `local-dir:` model folder (config + safetensors weights)."""
    from safetensors.torch import save_file

    preprocess = {"size": image_size, "mean": list(EMBEDDED_MEAN), "std": list(EMBEDDED_STD),
                  "interpolation": "bilinear", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess},
                                                             indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))


def zero_shot_report(params: Params, model: torch.nn.Module, tokenizer, spec: dict, device: torch.device) -> dict:
    """Zero-shot accuracy of the teacher on each configured zero-shot set (val split: no test peeking)."""
    out = {}
    for name, es in params.eval.zero_shot.items():
        frame = split_frame(params, es.dataset, "val", es.subset, ["image", "path", "label", "class_name"])
        if params.teacher.zero_shot_max_images:
            frame = frame.head(params.teacher.zero_shot_max_images)
        emb = embed_sources(model.visual, image_sources(es.dataset, frame), View.of(spec), device, 256,
                            desc=f"zero-shot {name}")
        classes = frame.select("label", "class_name").unique().sort("label")
        remap = {lab: i for i, lab in enumerate(classes["label"].to_list())}
        prompts = class_prompts(classes["class_name"].to_list(), params.eval.prompt_template)
        prompt_emb = embed_texts(model, tokenizer, prompts, device=device)
        labels = np.array([remap[x] for x in frame["label"].to_list()])
        acc = zero_shot(emb, labels, prompt_emb)["accuracy"]
        out[name] = {"zero_shot_accuracy": round(100 * acc, 2), "classes": len(prompts),
                     "chance": round(100 / len(prompts), 2), "split": "val"}
    return out


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    cfg = params.teacher
    with pio.atomic_path(paths.teacher(), directory=True) as tmp:
        if cfg.source == "embedded":
            model, info = train_embedded(params, device)
            model_cfg = info.pop("model_cfg")
            save_local_dir(model.cpu(), model_cfg, tmp, cfg.vision.image_size)
            model.to(device)
            spec = {"model": f"{LOCAL_DIR}{paths.teacher()}", "pretrained": None}
            tokenizer = tokenizer_for_embedded(model_cfg)
        else:
            from pipeline.lib.models import load_clip
            model = load_clip(cfg.model, cfg.pretrained).to(device).eval()
            spec, info, tokenizer = {"model": cfg.model, "pretrained": cfg.pretrained}, {}, tokenizer_for(cfg.model)
        mean, std = image_mean_std(model)
        size = image_size_of(model)
        with torch.no_grad():
            dim = embed_images(model.visual, torch.zeros(1, 3, size, size, device=device)).shape[1]
        # the CLIP logit scale (LwF, EWC and GIFT logits): the embedded teacher's fixed training value,
        # else the model's own, recorded so later stages need not load the text side to know it
        scale = cfg.logit_scale if cfg.source == "embedded" else float(model.logit_scale.exp().item())
        spec.update(image_size=size, mean=list(mean), std=list(std), embed_dim=int(dim), logit_scale=float(scale))
        (tmp / TEACHER_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
        report = {"source": cfg.source, "model": spec["model"], **info,
                  "zero_shot": zero_shot_report(params, model, tokenizer, spec, device)}
    pio.write_json(report, paths.teacher_metrics())
    for name, z in report["zero_shot"].items():
        print(f"[teacher] zero-shot {name}: {z['zero_shot_accuracy']:.1f} % ({z['classes']} classes, "
              f"chance {z['chance']:.1f} %)")
