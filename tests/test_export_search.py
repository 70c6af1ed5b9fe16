"""Using the result: `export` (an open_clip folder plain open_clip loads), `search` (id-mapped FAISS
indices, by image or text) and the self-contained report page in a real headless Chromium.

The fast tests export teachers of each kind in-process; the slow ones run DVC once on the tiny
preset and use that one project for export, search and the page.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.lib.models import create_embedded_clip, embed_images, embedded_model_cfg, load_clip, tokenizer_for
from pipeline.stages.export import export_model, teacher_model_config
from pipeline.stages.snapshot import find_chromium, open_page
from pipeline.stages.teacher import save_local_dir
from tests.conftest import ROOT, clone, run
from tests.real_formats import make_tiny_open_clip


def fine_tuned(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The model with its vision tower moved away from the teacher's, as fine-tuning does."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def assert_open_clip_loads_the_export(model: torch.nn.Module, teacher_tokenizer, folder: Path, texts: list[str]) -> None:
    """Plain open_clip rebuilds the same image and text embeddings (own tokenizer files included)
    from the folder alone."""
    import open_clip

    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    loaded.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    size = loaded.visual.image_size
    x = torch.randn(4, 3, *(size if isinstance(size, tuple) else (size, size)))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x, normalize=True), embed_images(model.visual, x),
                                   rtol=0, atol=1e-6)
        ours = model.encode_text(teacher_tokenizer(texts), normalize=True)
        torch.testing.assert_close(loaded.encode_text(tokenizer(texts), normalize=True), ours, rtol=0, atol=1e-6)
    assert list(preprocess.transforms[-1].mean) == list(model.visual.image_mean)


def test_export_of_an_open_clip_local_dir_teacher(tmp_path: Path) -> None:
    teacher = make_tiny_open_clip(tmp_path / "teacher")
    spec = {"model": f"local-dir:{teacher}", "pretrained": None}
    model = fine_tuned(load_clip(spec["model"]))
    tokenizer = tokenizer_for(spec["model"])
    export_model(model, tokenizer, teacher_model_config(spec), tmp_path / "out", tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors"}
    assert_open_clip_loads_the_export(model, tokenizer, tmp_path / "out", ["a photo of a cat", "a red circle"])


def test_export_of_a_built_in_architecture_with_a_checkpoint_file(tmp_path: Path) -> None:
    import open_clip

    checkpoint = tmp_path / "weights.pt"
    torch.save(open_clip.create_model("ViT-S-32").state_dict(), checkpoint)
    spec = {"model": "ViT-S-32", "pretrained": str(checkpoint)}
    model = fine_tuned(load_clip(spec["model"], spec["pretrained"]))
    tokenizer = tokenizer_for(spec["model"])
    export_model(model, tokenizer, teacher_model_config(spec), tmp_path / "out", tmp_path / "out")
    config = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())
    assert config["model_cfg"] == open_clip.get_model_config("ViT-S-32")
    assert_open_clip_loads_the_export(model, tokenizer, tmp_path / "out", ["a photo of a dog"])


def test_export_of_the_embedded_teacher_carries_its_text_tower(tmp_path: Path) -> None:
    """The embedded teacher's config names MiniLM symbolically; the export must not need the pipeline."""
    cfg = embedded_model_cfg(image_size=32, patch_size=8, width=32, layers=1, head_width=16)
    (tmp_path / "teacher").mkdir()
    save_local_dir(create_embedded_clip(cfg), cfg, tmp_path / "teacher", 32)
    spec = {"model": f"local-dir:{tmp_path / 'teacher'}", "pretrained": None}
    model = fine_tuned(load_clip(spec["model"]))
    final = tmp_path / "moved-into-place"
    tokenizer = tokenizer_for(spec["model"])
    export_model(model, tokenizer, teacher_model_config(spec), tmp_path / "staging", final)
    (tmp_path / "staging").rename(final)
    text_cfg = json.loads((final / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == str(final.resolve())
    assert {"config.json", "tokenizer.json", "open_clip_model.safetensors"} <= {p.name for p in final.iterdir()}
    assert_open_clip_loads_the_export(model, tokenizer, final, ["a red circle", "a photo of a zebra"])


# ------------------------------------------------------------------------------------ slow: one DVC run
def cli(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline", *args], project, check=check)


@pytest.fixture(scope="module")
def built(reproduced_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the reproduced tiny project (conftest; its outputs from the shared DVC cache) with
    `infuse` exported. The tiny teacher trains enough steps for text search to mean something, and
    no fine-tune can select θ0, so the exported vision tower is not the teacher's."""
    project = clone(reproduced_tiny, tmp_path_factory.mktemp("use") / "project", share_cache=True)
    cli(project, "export", "infuse")
    return project


def params_of(project: Path):
    from pipeline.config import load_params
    return load_params(project / "params.yaml")


ROUND_TRIP = """
import json, sys
import numpy as np, open_clip, pyarrow.parquet as pq, torch
from io import BytesIO
from PIL import Image
from pipeline.lib.images import eval_view
folder, manifest, *tables = sys.argv[1:]
model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
model.eval()
mean = torch.tensor(preprocess.transforms[-1].mean).view(3, 1, 1)
std = torch.tensor(preprocess.transforms[-1].std).view(3, 1, 1)
size = model.visual.image_size[0]
rows = pq.read_table(manifest, columns=["id", "image"]).to_pydict()
image_of = dict(zip(rows["id"], rows["image"]))
worst, worst_preprocess, n = 0.0, 0.0, 0
for table in tables:
    t = pq.read_table(table).to_pydict()
    images = [Image.open(BytesIO(image_of[i])).convert("RGB") for i in t["id"]]
    # the pipeline's eval view (shorter side -> size, centre crop), then the model's own normalisation
    x = torch.stack([(torch.from_numpy(np.asarray(eval_view(im, size), np.float32) / 255).permute(2, 0, 1) - mean) / std
                     for im in images])
    with torch.no_grad():
        ours = model.encode_image(x, normalize=True).numpy()
        theirs = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True).numpy()
    stored = np.array(t["embedding"], np.float32)
    worst = max(worst, float(np.abs(ours - stored).max()))
    worst_preprocess = max(worst_preprocess, float(np.abs(theirs - stored).max()))
    n += len(stored)
print(json.dumps({"max_abs_diff": worst, "max_abs_diff_open_clip_preprocess": worst_preprocess, "images": n}))
"""


@pytest.mark.slow
def test_export_loads_in_plain_open_clip_and_reproduces_the_stored_embeddings(built: Path) -> None:
    params = params_of(built)
    folder = built / "exports" / "infuse"
    tables = sorted((built / "data" / "embeddings" / "infuse").glob(f"{params.roles.generic}__*__images.parquet"))
    tables += sorted((built / "data" / "embeddings" / "infuse").glob(f"{params.roles.target}__*__images.parquet"))
    manifests = {t.name.split("__")[0] for t in tables}
    for dataset in manifests:  # a separate process: nothing of the pipeline's model loading is imported
        mine = [str(t) for t in tables if t.name.startswith(f"{dataset}__")]
        out = run([sys.executable, "-c", ROUND_TRIP, str(folder), str(built / "data" / "prepared" / dataset /
                                                                        "manifest.parquet"), *mine], built)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"[round trip] {dataset}: {result}")
        assert result["images"] > 0
        assert result["max_abs_diff"] <= 1e-6, result
        # ... and they are the fine-tuned tower's, not the teacher's
        ours = pq.read_table(mine[0]).column("embedding").to_pylist()
        teachers = pq.read_table(mine[0].replace("/infuse/", "/pretrained/")).column("embedding").to_pylist()
        assert np.abs(np.array(ours) - np.array(teachers)).max() > 1e-3
        # open_clip's own preprocessing is the same view on these square images
        assert result["max_abs_diff_open_clip_preprocess"] <= 1e-6, result


@pytest.mark.slow
def test_model_card_names_method_data_deltas_params_and_commit(built: Path) -> None:
    card = (built / "exports" / "infuse" / "README.md").read_text()
    params = params_of(built)
    summary = json.loads((built / "reports" / "metrics.json").read_text())["summary"]
    assert "library_name: open_clip" in card and "**Method:** infuse" in card
    assert params.roles.target in card and params.roles.generic in card
    for key in ("in_domain", "ood_image_image", "ood_image_text", "zero_shot"):
        assert f"{summary['infuse'][key]:.2f} | {summary['infuse']['delta_' + key]:+.2f} |" in card, key
    assert hashlib.sha256((built / "params.yaml").read_bytes()).hexdigest() in card
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=built, capture_output=True, text=True).stdout.strip()
    assert head in card
    # a second export replaces the first; a folder that is not an export is never replaced
    (built / "exports" / "other").mkdir(parents=True)
    (built / "exports" / "other" / "notes.txt").write_text("mine")
    refused = cli(built, "export", "infuse", "--out", "exports/other", check=False)
    assert refused.returncode == 1 and "error [export]:" in refused.stderr
    assert (built / "exports" / "other" / "notes.txt").read_text() == "mine"


def parse_results(stdout: str) -> list[dict]:
    """The rows `search` prints: rank, score, label, class name (may contain spaces), path."""
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"^\s*(\d+)\s+(-?\d+\.\d+)\s+(\d+)\s+(.+?)\s+(\S+)$", line)
        if m:
            rows.append({"rank": int(m[1]), "score": float(m[2]), "label": int(m[3]), "class": m[4], "path": m[5]})
    return rows


@pytest.mark.slow
def test_search_with_an_indexed_image_finds_it_first(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    import polars as pl

    from pipeline import cli as pipeline_cli
    from pipeline.stages.common import eval_sets

    params = params_of(built)
    monkeypatch.chdir(built)
    for number, (name, (_, cfg)) in enumerate(eval_sets(params).items()):
        table = pq.read_table(built / "data" / "embeddings" / "infuse" / f"{cfg.dataset}__{cfg.split}__images.parquet",
                              columns=["id", "path", "subset"]).to_pydict()
        rows = [(i, p) for i, p, s in zip(table["id"], table["path"], table["subset"]) if cfg.subset in (None, s)]
        image_id, path = rows[len(rows) // 2]
        manifest = pl.read_parquet(built / "data" / "prepared" / cfg.dataset / "manifest.parquet")
        row = manifest.filter(pl.col("id") == image_id).row(0, named=True)
        query = tmp_path / f"{name}.png"
        query.write_bytes(row["image"])  # packed in the manifest; search takes a file on disk
        args = ["search", "infuse", "--image", str(query), "--set", name, "-k", "5"]
        if number == 0:  # the command as a person runs it; the other sets through the same entry point in-process
            stdout = cli(built, *args).stdout
        else:
            capsys.readouterr()
            pipeline_cli.main(args)
            stdout = capsys.readouterr().out
        results = parse_results(stdout)
        assert len(results) == 5 and [r["rank"] for r in results] == [1, 2, 3, 4, 5]
        assert results[0]["path"] == path == row["path"], stdout
        assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert results[0]["label"] == row["label"] and results[0]["class"] == row["class_name"]
        assert all(a["score"] >= b["score"] for a, b in zip(results, results[1:]))


TEXT_EMBED = """
import json, sys
import open_clip, torch
folder, *texts = sys.argv[1:]
model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
with torch.no_grad():
    print(json.dumps(model.eval().encode_text(open_clip.get_tokenizer(f"local-dir:{folder}")(texts), normalize=True).tolist()))
"""


@pytest.mark.slow
def test_search_by_text_ranks_like_the_exported_model_and_finds_the_named_class(
        built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text pathway is the exported model's (the ranking plain open_clip gives over the stored
    embeddings), and class prompts find their own class far more often than chance."""
    import polars as pl

    from pipeline.lib.models import embed_texts
    from pipeline.stages import search
    from pipeline.stages.common import eval_sets
    from pipeline.stages.encoders import load_teacher
    from pipeline.stages.searching import search_settings

    params = params_of(built)
    sets = eval_sets(params)
    teacher = json.loads((built / "reports" / "teacher.json").read_text())["zero_shot"]
    # the image-image set with class prompts on which the teacher's zero-shot accuracy is highest above
    # chance: where text search can show it finds the named class
    name = max((n for n in params.eval.zero_shot if n in sets),
               key=lambda n: teacher[n]["zero_shot_accuracy"] - teacher[n]["chance"])
    cfg = sets[name][1]
    monkeypatch.chdir(built)
    rows = search.gallery_rows("infuse", cfg)
    classes = (pl.read_parquet(built / "data" / "prepared" / cfg.dataset / "manifest.parquet",
                               columns=["label", "class_name"]).unique("label")
               .filter(pl.col("label").is_in(rows["label"].unique().to_list())).sort("label"))
    prompts = [params.eval.prompt_template.format(c) for c in classes["class_name"]]

    # the command, once: what it prints is plain open_clip's ranking over the stored image embeddings
    printed = parse_results(cli(built, "search", "infuse", "--text", prompts[0], "--set", name, "-k", "5").stdout)
    exported = np.array(json.loads(run([sys.executable, "-c", TEXT_EMBED, str(built / "exports" / "infuse"), *prompts],
                                       built).stdout), np.float32)
    table = pq.read_table(built / "data" / "embeddings" / "infuse" / f"{cfg.dataset}__{cfg.split}__images.parquet")
    by_id = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()))
    emb = np.array([by_id[i] for i in rows["id"]], np.float32)  # the gallery, in the index's order
    expected = np.argsort(-(emb @ exported[0]), kind="stable")[:5]
    assert [r["path"] for r in printed] == [rows["path"][int(i)] for i in expected]
    assert [r["score"] for r in printed] == pytest.approx([float(emb[i] @ exported[0]) for i in expected], abs=1e-4)

    # every class prompt, through the same functions (the text tower loaded once)
    model, spec = load_teacher("cpu")
    queries = embed_texts(model, tokenizer_for(spec["model"]), prompts)
    np.testing.assert_allclose(queries, exported, atol=1e-5)
    index = search.load_index("infuse", name)
    labels = rows["label"].to_numpy()
    first_hit_right, precision = [], []
    for (label, class_name), query in zip(classes.iter_rows(), queries):
        top = search.results(index, query[None], 5, search_settings(params, device="cpu"), rows)
        first_hit_right.append(top["label"][0] == label and top["class_name"][0] == class_name)
        precision.append(float((top["label"] == label).mean()))
    chance = float(np.mean([np.mean(labels == lab) for lab in classes["label"]]))
    print(f"[text search] {name}: named class first for {sum(first_hit_right)}/{len(prompts)} prompts; "
          f"precision@5 {np.mean(precision):.2f} (chance {chance:.2f})")
    assert any(first_hit_right)
    assert np.mean(precision) >= 2 * chance


@pytest.mark.slow
def test_evaluation_through_id_mapped_indices_is_exact(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    from pipeline.lib.retrieval import index_ids
    from pipeline.stages.common import stored_embeddings
    from pipeline.stages.evaluate import image_image

    monkeypatch.chdir(built)
    params = params_of(built)
    record = json.loads((built / "data" / "eval" / "infuse.json").read_text())
    stored = record["image_image"]
    exact = image_image(params, stored_embeddings("infuse"), "exact")  # no index: brute-force kNN
    assert stored == exact
    # what was searched, and how, is recorded next to the results
    meta = json.loads((built / "data" / "indices" / "infuse" / "index.json").read_text())
    assert record["search"] == {"index": "flat", "device": "cpu"} and meta["search"] == {"device": "cpu"}
    for name in stored:
        index = faiss.read_index(str(built / "data" / "indices" / "infuse" / f"{name}.faiss"))
        assert isinstance(index, faiss.IndexIDMap2) and index_ids(index) is not None
        assert meta["sets"][name] == {"vectors": index.ntotal}


@pytest.mark.slow
def test_report_page_renders_offline_in_headless_chromium(built: Path) -> None:
    if find_chromium() is None:
        pytest.skip("no Chromium found (install the Debian package `chromium`, or set CHROMIUM=/path/to/chrome)")
    params = params_of(built)
    page = built / "reports" / "report.html"
    shot = built / "reports" / "report.png"
    out = cli(built, "snapshot")  # the documented command: checks the page and saves the screenshot
    assert "0 problems" in out.stdout and shot.stat().st_size > 20_000
    check = open_page(page)
    assert check.problems == []
    grid = json.loads((built / "data" / "neighbours" / "neighbours.json").read_text())
    sets = grid["sets"]
    thumbnails = sum(len(s["queries"]) * (1 + len(params.methods) * grid["neighbours"]) for s in sets)
    figures = len(re.findall(r"!\[[^\]]*\]\(", (built / "reports" / "report.md").read_text()))
    assert check.images == figures + thumbnails
    assert check.tables >= 4 + sum(len(s["queries"]) for s in sets)
    for entry in sets:  # every set, every method, with class names
        assert entry["name"] in check.text
        assert all(item["class_name"] in check.text for item in entry["items"].values())
    for method in params.methods:
        assert method in check.text
    assert [s["name"] for s in sets] == [*params.eval.in_domain, *params.eval.out_of_domain]


def test_the_model_card_cites_the_paper_with_the_readmes_entry() -> None:
    from pipeline.stages.export import CITATION

    assert CITATION.startswith("@inproceedings{") and CITATION in (ROOT / "README.md").read_text()
