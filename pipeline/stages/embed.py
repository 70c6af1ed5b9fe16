"""Stage `embed <method>`: the method's vision encoder over every evaluation split → Parquet.

One table per (dataset, split) an evaluation reads: id, label, subset, path (the manifest's: a file
under the dataset's root, or a packed image's name), embedding (FixedSizeList<float32, D>), with the
model, checkpoint and preprocessing in the schema metadata.
"""
from __future__ import annotations

import argparse

from pipeline import io as pio
from pipeline import paths
from pipeline.config import load_params
from pipeline.lib.models import resolve_device, set_threads
from pipeline.stages.common import spec_metadata
from pipeline.stages.encoders import embed_eval_splits, load_method_visual


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    visual, spec = load_method_visual(args.method, device)  # text embeddings come from the `features` stage
    checkpoint = paths.checkpoint(args.method)
    with pio.atomic_path(paths.embeddings(args.method), directory=True) as out:
        for dataset, split, frame, emb in embed_eval_splits(visual, params, spec, device, args.method):
            meta = spec_metadata(spec, dataset=dataset, split=split, method=args.method, checkpoint=str(checkpoint))
            pio.write_embeddings(out / paths.split_file(dataset, split), frame["id"].to_numpy(),
                                 frame["label"].to_numpy(), emb, meta, subset=frame["subset"].to_list(),
                                 path=frame["path"].to_list())
            print(f"[embed {args.method}] {dataset}/{split}: {emb.shape[0]} x {emb.shape[1]}")
