"""Tiny copies of the real datasets' own layouts (a few classes, a few 40x32 images each), and a tiny
open_clip model folder: what the paper preset reads, small enough for CPU tests."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image


def image(path: Path, seed: int, fmt: str = "JPEG", size: tuple[int, int] = (40, 32)) -> Path:
    """A small image whose colour depends on `seed` (so classes differ a little)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    pixels = np.clip(base + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_sop(root: Path, classes: int = 10, per_class: int = 4) -> Path:
    top = root / "Stanford_Online_Products"
    rows = {"train": [], "test": []}
    for c in range(1, classes + 1):
        split = "train" if c <= classes // 2 else "test"
        for i in range(per_class):
            rel = f"bicycle_final/{c:06d}_{i}.JPG"
            image(top / rel, c)
            rows[split].append(f"{len(rows[split]) + 1} {c} 1 {rel}")
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        (top / name).write_text("image_id class_id super_class_id path\n" + "\n".join(rows[split]) + "\n")
    return top


def make_cars196(root: Path, per_class: int = 3) -> Path:
    """cars_annos.mat over 196 classes would be large: 4 train classes (<= 98) and 4 test classes."""
    from scipy.io import savemat

    classes = [1, 2, 3, 4, 99, 100, 101, 102]
    records, n = [], 0
    for c in classes:
        for _ in range(per_class):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            image(root / rel, 100 + c)
            records.append((rel, 0, 0, 10, 10, c, 0))
    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
             ("class", "O"), ("test", "O")]
    names = np.array([f"Brand Model {c} 2012" for c in range(1, 197)], dtype=object)
    savemat(str(root / "cars_annos.mat"), {"annotations": np.array(records, dtype=dtype)[None, :],
                                           "class_names": names[None, :]})
    return root


def make_inshop(root: Path, items: int = 8, per_item: int = 4) -> Path:
    top = root / "In-shop Clothes Retrieval Benchmark"
    lines = []
    for item in range(1, items + 1):
        for i in range(per_item):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{i:02d}_1_front.jpg"
            image(top / "Img" / rel, 200 + item)
            status = "train" if item <= items // 2 else ("query" if i % 2 == 0 else "gallery")
            lines.append(f"{rel} id_{item:08d} {status}")
    (top / "Eval").mkdir(parents=True)
    (top / "Eval" / "list_eval_partition.txt").write_text(
        f"{len(lines)}\nimage_name item_id evaluation_status\n" + "\n".join(lines) + "\n")
    return top


def make_inat2018(root: Path, per_class: int = 3) -> Path:
    splits = {"train": [("Plantae", 7772), ("Plantae", 7773), ("Aves", 3001), ("Aves", 3002)],
              "test": [("Insecta", 5001), ("Insecta", 5002), ("Fungi", 6001)]}
    for split, classes in splits.items():
        lines = []
        for kingdom, cat in classes:
            for i in range(per_class):
                rel = f"train_val2018/{kingdom}/{cat}/{cat}_{i:03d}.jpg"
                image(root / rel, cat)
                lines.append(rel)
        folder = root / "Inat_dataset_splits"
        folder.mkdir(exist_ok=True)
        (folder / f"Inaturalist_{split}_set1.txt").write_text("\n".join(lines) + "\n")
    (root / "categories.json").write_text(json.dumps([{"id": cat, "name": f"{kingdom.lower()} sp. {cat}"}
                                                      for classes in splits.values() for kingdom, cat in classes]))
    return root


def make_food2k(root: Path, classes: int = 8, per_class: int = 3) -> Path:
    top = root / "Food2k_complete"
    for c in range(classes):
        for i in range(per_class):
            image(top / str(c) / f"{i}.jpg", 300 + c)
    (root / "food2k_label2name_en.txt").write_text("\n".join(f"{c}--dish number {c}" for c in range(classes)) + "\n")
    return root


WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]


def make_imagenet(root: Path, per_class: int = 10, flat_val: bool = False) -> Path:
    names = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark", "tiger shark",
             "hammerhead, hammerhead shark", "electric ray, crampfish"]
    for k, wnid in enumerate(WNIDS):
        for i in range(per_class):
            image(root / "train" / wnid / f"{wnid}_{i}.JPEG", 400 + k)
    solution = ["ImageId,PredictionString"]
    for k, wnid in enumerate(WNIDS):
        for i in range(3):
            stem = f"ILSVRC2012_val_{k * 3 + i + 1:08d}"
            image(root / "val" / ("" if flat_val else wnid) / f"{stem}.JPEG", 400 + k)
            solution.append(f"{stem},{wnid} 1 2 3 4")
    if flat_val:
        (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("\n".join(f"{w} {n}" for w, n in zip(WNIDS, names)) + "\n")
    return root


def make_karpathy(root: Path, kind: str, images: int = 12) -> Path:
    """Flickr30k (flat flickr30k-images/) or COCO (val2014/ with filepath) with Karpathy's split JSON."""
    rng = random.Random(kind)
    entries = []
    for i in range(images):
        split = "test" if i < images // 2 else rng.choice(["train", "restval", "val"])
        if kind == "coco":
            name, filepath = f"COCO_val2014_{i:012d}.jpg", "val2014"
            image(root / filepath / name, 500 + i)
        else:
            name, filepath = f"{1000 + i}.jpg", None
            image(root / "flickr30k-images" / name, 600 + i)
        sentences = [{"raw": f"a photo number {i} seen in way {j}", "tokens": []} for j in range(5)]
        entry = {"filename": name, "split": split, "sentences": sentences, "imgid": i}
        if filepath:
            entry["filepath"] = filepath
        entries.append(entry)
    (root / f"dataset_{'coco' if kind == 'coco' else 'flickr30k'}.json").write_text(
        json.dumps({"images": entries, "dataset": kind}))
    return root


def make_tiny_open_clip(folder: Path, image_size: int = 32) -> Path:
    """An open_clip `local-dir:` model (config + safetensors) with the standard CLIP tokenizer: a stand-in
    for real pretrained weights on this offline CPU machine."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": image_size, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    model = open_clip.model.CLIP(**cfg)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"size": image_size, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                  "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def make_all(root: Path) -> dict[str, Path]:
    """Every dataset of the paper preset, tiny, under `root/<name>`."""
    return {
        "sop": make_sop(root / "sop"), "imagenet": make_imagenet(root / "imagenet"),
        "cars": make_cars196(root / "cars"), "inshop": make_inshop(root / "inshop"),
        "inat": make_inat2018(root / "inat"), "food2k": make_food2k(root / "food2k"),
        "flickr30k": make_karpathy(root / "flickr30k", "flickr30k"), "coco": make_karpathy(root / "coco", "coco"),
    }
