"""Every dataset source, declared once: params validation, the messages and the `prepare` stage read it.

A source is either embedded (rendered offline: its reader takes `(name, cfg)` and returns the
manifest rows and their metadata) or read from files (a local `root` or `downloads`: its reader
takes the folder and returns a `formats.Listing`, which `pipeline.sources.datasets` splits and
checks the same way for all). Readers are named by their dotted path and imported only when a
dataset is prepared, so validating params loads none of them. A new source is one entry here plus
its reader (and, if its reader reads files other than those below `root`, a function naming them:
`inputs`, so that a change to them reruns `prepare`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.lib.worlds.embedded.web import check_web_subset


@dataclass(frozen=True)
class Source:
    name: str
    reader: str                   # dotted name of the reader (see the module docstring)
    origin: str                   # where the data comes from: shown when its folder is missing
    embedded: bool = False
    annotations: str | None = None        # default name of the annotation file (`datasets.<name>.annotations`)
    needs_annotations: bool = False       # no default: the user names the file
    check: Any = None                     # (cfg) -> [(key, problem)] for the source's own options
    # dotted name of (root, annotations=...) -> [(label, folder, files)]: the files its reader reads,
    # which `prepare` depends on (pipeline.sources.fingerprint); None: every file below `root`
    inputs: str | None = None


def _check_classes(cfg: Any) -> list[tuple[str, str]]:
    out = []
    if cfg.n_classes < 3:
        out.append(("n_classes", f"must be >= 3, got {cfg.n_classes}"))
    if cfg.per_class < 2:
        out.append(("per_class", f"must be >= 2, got {cfg.per_class}"))
    if cfg.class_offset < 0:
        out.append(("class_offset", f"must be >= 0, got {cfg.class_offset}"))
    return out


def _check_web(cfg: Any) -> list[tuple[str, str]]:
    if not cfg.subsets:
        return [("subsets", "the embedded web needs at least one subset")]
    return [(f"subsets.{subset}", problem) for subset, options in cfg.subsets.items()
            if (problem := check_web_subset(subset, dict(options or {}))) is not None]


_EMBEDDED = "pipeline.sources.embedded"
_FORMATS = "pipeline.sources.formats"
_KARPATHY = "cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("embedded_flags", f"{_EMBEDDED}.flags", "rendered offline (pipeline.lib.worlds.embedded.flags)",
           embedded=True, check=_check_classes),
    Source("embedded_glyphs", f"{_EMBEDDED}.glyphs", "rendered offline from matplotlib's fonts", embedded=True,
           check=_check_classes),
    Source("embedded_web", f"{_EMBEDDED}.web", "rendered offline, and Animal-MNIST from its PyPI package",
           embedded=True, check=_check_web),
    Source("sop", f"{_FORMATS}.read_sop",
           "Stanford_Online_Products.zip, ftp://cs.stanford.edu/cs/cvgl/ (cvgl.stanford.edu/projects/lifted_struct)"),
    Source("cars196", f"{_FORMATS}.read_cars196",
           "car_ims.tgz + cars_annos.mat (ai.stanford.edu/~jkrause/cars/car_dataset.html; the original host is "
           "offline: use a mirror of the same two files)"),
    Source("inshop", f"{_FORMATS}.read_inshop",
           "DeepFashion In-shop Clothes Retrieval Benchmark (mmlab.ie.cuhk.edu.hk/projects/DeepFashion/"
           "InShopRetrieval.html, Google Drive after agreeing to its terms): Img/img/ + Eval/list_eval_partition.txt"),
    Source("inat2018", f"{_FORMATS}.read_inat2018",
           "train_val2018.tar.gz (+ categories.json) from github.com/visipedia/inat_comp (2018) and "
           "Inat_dataset_splits/Inaturalist_{train,test}_set1.txt of the Smooth-AP repository "
           "(github.com/Andrew-Brown1/Smooth_AP)"),
    Source("food2k", f"{_FORMATS}.read_food2k",
           "Food2K from its authors on request (123.57.42.89/FoodProject.html): Food2k_complete/<class id>/"),
    Source("imagenet", f"{_FORMATS}.read_imagenet",
           "ILSVRC2012 from image-net.org (registration): train/<wnid>/*.JPEG and val/ (class folders, or flat "
           "with LOC_val_solution.csv)"),
    Source("flickr30k", f"{_FORMATS}.read_karpathy",
           f"flickr30k-images/ (form at shannon.cs.illinois.edu/DenotationGraph) + dataset_flickr30k.json from {_KARPATHY}",
           annotations="dataset_flickr30k.json"),
    Source("coco", f"{_FORMATS}.read_karpathy",
           f"val2014.zip from images.cocodataset.org + dataset_coco.json from {_KARPATHY}",
           annotations="dataset_coco.json"),
    Source("folder", f"{_FORMATS}.read_folder",
           "your own images as <root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>"),
    Source("csv", f"{_FORMATS}.read_csv", "your own CSV of path,label[,split,class_name,caption] "
           "(datasets.<name>.annotations)", needs_annotations=True, inputs=f"{_FORMATS}.csv_inputs"),
)}


def register(source: Source) -> None:
    """Add (or replace) a source: validation, `prepare` and the messages then know it."""
    SOURCES[source.name] = source
