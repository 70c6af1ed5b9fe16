"""The fine-tuning step on a real (tiny) open_clip vision tower: the retention registry drives the
schedule and the step, each baseline's term against a hand computation of its formula, LP-FT's
stopping rule, LoRA through peft (open_clip and timm towers), and checkpoint selection."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from hydra.utils import get_method

from pipeline.config import ConfigError, FinetuneCfg
from pipeline.config.validate import validate_recipe
from pipeline.lib import losses, retention
from pipeline.lib.embedding import View
from pipeline.lib.models import vision_params
from pipeline.lib.training.fisher import estimate_fisher
from pipeline.lib.training.loop import run_steps
from pipeline.lib.training.schedule import step_plan, validation_points
from pipeline.lib.training.selection import Selection
from pipeline.lib.training.trainer import Aids, FineTuner, Runtime, plateaued
from pipeline.lib.wiseft import interpolate_weights

LABELS = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])


def tower() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=16, patch_size=4, width=32, layers=1, heads=2, mlp_ratio=2.0,
                             output_dim=24)


def make(teacher: bool = False, fisher=None, **overrides) -> FineTuner:
    cfg = FinetuneCfg(**{"train_resize": 18, **overrides})
    return FineTuner(tower(), 5, cfg, View(16, (0.5,) * 3, (0.5,) * 3, 24, 10.0), Runtime(),
                     Aids(PROTOS, fisher, tower() if teacher else None))


def tuner(**overrides) -> FineTuner:
    return make(**{"lambda_weights": 10.0, "lambda_distill": 100.0, **overrides})


def batch(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 255, (n, 3, 18, 18), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def term(t: FineTuner, key: str, domain: str = retention.TARGET) -> float:
    return get_method(retention.BY_KEY[key].loss)(t, retention.Batch(domain)).item()


def move(t: FineTuner, by: float = 0.01) -> None:
    with torch.no_grad():
        for p in vision_params(t.visual):
            p.add_(by * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))


PROTOS = F.normalize(torch.randn(6, 24, generator=torch.Generator().manual_seed(2)), dim=-1)


# ----------------------------------------------------------------------------- the registry
def test_every_lambda_field_has_a_registry_entry_and_vice_versa() -> None:
    fields = {f.name for f in dataclasses.fields(FinetuneCfg) if f.name.startswith("lambda_")}
    assert fields == set(retention.BY_KEY)
    for t in retention.TERMS:
        assert t.batches in retention.BATCHES and t.inputs <= set(retention.INPUTS), t.key
        assert all(other in fields for other in t.requires), t.key


@pytest.mark.parametrize("key", sorted(t.key for t in retention.TERMS if t.batches == retention.GENERIC))
def test_a_generic_batch_term_makes_generic_batches_be_drawn(key: str) -> None:
    cfg = FinetuneCfg(**{key: 1.0})
    assert retention.draws_generic_batches(cfg) and step_plan(dataclasses.replace(cfg, steps=1)) == ["joint"]
    assert step_plan(dataclasses.replace(cfg, steps=1, schedule="round_robin")) == ["target", "generic"]
    assert retention.BY_KEY[key] in retention.terms_on(cfg, retention.GENERIC)
    assert retention.BY_KEY[key] not in retention.terms_on(cfg, retention.TARGET)
    with pytest.raises(ConfigError, match="schedule"):  # the schedule of before is gone, by name
        validate_recipe(dataclasses.replace(cfg, schedule="target_only"), "methods.m")


def test_every_batch_terms_run_on_both_domains_and_need_no_generic_images() -> None:
    cfg = FinetuneCfg(lambda_weights=1.0, lambda_ewc=1.0)
    assert not retention.draws_generic_batches(cfg)
    for domain in (retention.TARGET, retention.GENERIC):
        assert {t.key for t in retention.terms_on(cfg, domain)} == {"lambda_weights", "lambda_ewc"}


def test_registry_checks_requirements_and_lora() -> None:
    with pytest.raises(ConfigError, match="lambda_awc.*lambda_gift"):
        validate_recipe(FinetuneCfg(lambda_awc=1.0), "methods.gift")
    for key in ("lambda_weights", "lambda_ewc"):
        with pytest.raises(ConfigError, match=f"{key}.*LoRA"):
            validate_recipe(FinetuneCfg(lora_rank=4, **{key: 1.0}), "methods.lora")
    validate_recipe(FinetuneCfg(lora_rank=4, lambda_distill=1.0), "methods.lora")  # a loss term is fine


def test_methods_using_generic_labels_or_prompts_are_named() -> None:
    assert retention.uses_generic_labels_or_prompts(FinetuneCfg(lambda_distill=1.0, lambda_weights=1.0)) == []
    reasons = retention.uses_generic_labels_or_prompts(FinetuneCfg(lambda_gift=1.0, lambda_awc=1.0, lambda_lwf=1.0))
    assert [r.split(":")[0] for r in reasons] == ["lambda_gift", "lambda_lwf", "lambda_awc"]
    assert "generic labels and class prompts" in reasons[0] and "generic labels" not in reasons[1]
    assert retention.uses_generic_labels_or_prompts(FinetuneCfg(lambda_ewc=1.0))[0].startswith("lambda_ewc: generic labels")


@pytest.mark.parametrize("cfg, expected", [
    (FinetuneCfg(steps=2, lambda_distill=1.0), ["joint", "joint"]),   # every method: one step per target batch
    (FinetuneCfg(steps=2), ["joint", "joint"]),                       # naive too
    (FinetuneCfg(steps=2, lambda_distill=1.0, schedule="round_robin"), ["target", "generic", "target", "generic"]),
    (FinetuneCfg(steps=2, schedule="round_robin"), ["target", "generic", "target", "generic"]),  # zero-loss steps
    (FinetuneCfg(steps=2, kind="pretrained"), []),
    (FinetuneCfg(steps=2, lp_max_steps=50), ["joint", "joint"]),      # the probe runs before, outside the plan
])
def test_step_plan(cfg: FinetuneCfg, expected: list[str]) -> None:
    assert step_plan(cfg) == expected


# ----------------------------------------------------------------------------- steps
def test_weight_term_is_zero_at_theta0_and_ignores_the_classifier() -> None:
    t = tuner()
    assert term(t, "lambda_weights") == 0.0
    with torch.no_grad():
        t.classifier.weight.add_(1.0)
    assert term(t, "lambda_weights") == 0.0
    with torch.no_grad():
        next(t.visual.parameters()).add_(0.1)
    assert term(t, "lambda_weights") > 0


def test_target_step_moves_the_tower_and_the_generic_step_uses_teacher_targets() -> None:
    t = tuner()
    before = copy.deepcopy(t.visual.state_dict())
    logs = t.target_step(batch(), LABELS, step=0)
    assert logs["loss_cls"] > 0 and logs["reg_weights"] == 0.0
    assert any(not torch.equal(before[k], v) for k, v in t.visual.state_dict().items())
    targets = F.normalize(torch.randn(8, 24), dim=-1)
    logs = t.generic_step(batch(), targets, step=1)
    assert logs["loss_distill"] > 0 and logs["reg_weights"] > 0


def test_regulariser_only_generic_steps_pull_toward_theta0_without_images() -> None:
    t = make(lambda_weights=10.0, lr_backbone=1e-3, schedule="round_robin")
    move(t)  # away from θ0 with fresh AdamW moments: the step's only gradient is R_w's
    drift = term(t, "lambda_weights")
    logs = t.generic_step(None, None, step=1)  # R_w alone: nothing of the generic batch is needed
    assert logs == {"reg_weights": pytest.approx(drift)} and term(t, "lambda_weights") < drift


def test_a_zero_loss_round_robin_step_still_moves_the_weights_along_the_moments() -> None:
    """The reference's naive baseline under optax: a replay step without a loss is an AdamW step on zero
    gradients; after a target step its moments carry every tensor (the head too) further."""
    t = make(schedule="round_robin", lr_backbone=1e-3)
    t.target_step(batch(), LABELS, step=0)
    before = copy.deepcopy(t.visual.state_dict()), t.classifier.weight.detach().clone()
    assert t.generic_step(None, None, step=1) == {}
    assert any(not torch.equal(before[0][k], v) for k, v in t.visual.state_dict().items())
    assert not torch.equal(before[1], t.classifier.weight)


def test_a_joint_step_takes_both_batches_in_one_optimizer_step() -> None:
    t = tuner()
    targets = F.normalize(torch.randn(8, 24), dim=-1)
    logs = t.joint_step(batch(), LABELS, (batch(seed=2), targets, None), step=0)
    assert {"loss_cls", "loss_distill", "reg_weights"} <= set(logs) and logs["loss_distill"] > 0
    assert t.optimizer.state[t.classifier.weight]["step"] == 1  # one AdamW step for the two batches
    naive = make()
    assert set(naive.joint_step(batch(), LABELS, None, step=0)) == {"loss_cls"}  # no replay batch drawn


def test_steps_are_deterministic_given_seed_and_step() -> None:
    a, b = tuner(), tuner()
    for step in range(3):
        a.target_step(batch(), LABELS, step)
        b.target_step(batch(), LABELS, step)
    for (k, va), vb in zip(a.visual.state_dict().items(), b.visual.state_dict().values()):
        assert torch.equal(va, vb), k


def test_online_teacher_targets_the_same_augmented_view() -> None:
    t = make(teacher=True, lambda_distill=1.0, teacher_targets="online")
    # student == teacher at the start: the online distillation loss is exactly zero
    assert t.generic_step(batch(), None, step=0)["loss_distill"] == pytest.approx(0.0, abs=1e-12)


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float) -> float:
    """mean_i Σ_c p_ic log(p_ic / q_ic), p = softmax(teacher/τ), q = softmax(student/τ), by loops in float64."""
    total = 0.0
    for zp, zq in zip(p_logits.double().tolist(), q_logits.double().tolist()):
        ep = [math.exp(v / tau) for v in zp]
        eq = [math.exp(v / tau) for v in zq]
        p, q = [v / sum(ep) for v in ep], [v / sum(eq) for v in eq]
        total += sum(a * math.log(a / b) for a, b in zip(p, q))
    return total / len(p_logits)


def test_lwf_distils_the_old_models_zero_shot_logits_on_the_target_images() -> None:
    t = make(teacher=True, lambda_lwf=1.0, lr_backbone=1e-2, schedule="round_robin")
    assert t.target_step(batch(), LABELS, step=0)["loss_lwf"] == pytest.approx(0.0, abs=1e-6)  # θ = θ0
    for step in range(1, 4):
        t.target_step(batch(seed=step), LABELS, step)
    images, step = batch(seed=9), 9
    with torch.no_grad():  # the same augmented target view the step draws, through both towers
        x = t._views(images, step)
        student = F.normalize(t.visual.eval()(x), dim=-1)
        teacher = F.normalize(t.aids.teacher(x), dim=-1)
    t.visual.train()
    logs = t.target_step(images, LABELS, step)
    expected = kl(10.0 * teacher @ PROTOS.T, 10.0 * student @ PROTOS.T, 2.0)
    assert logs["loss_lwf"] == pytest.approx(expected, rel=1e-4) and expected > 1e-5


def test_replay_logits_and_gram_are_zero_for_the_teacher_itself_and_positive_once_it_moved() -> None:
    t = make(teacher=True, lambda_replay_logits=1.0, lambda_gram=1.0, teacher_targets="online", lr_backbone=1e-2)
    logs = t.generic_step(batch(), None, step=0)
    assert logs["loss_replay_logits"] == pytest.approx(0.0, abs=1e-6) and logs["loss_gram"] == pytest.approx(0.0, abs=1e-10)
    assert "loss_distill" not in logs  # λ_d = 0: not computed
    for step in range(1, 4):
        t.target_step(batch(), LABELS, step)
    logs = t.generic_step(batch(), None, step=9)
    assert logs["loss_replay_logits"] > 1e-4 and logs["loss_gram"] > 1e-6


# ----------------------------------------------------------------------------- EWC
FISHER_X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
FISHER_Y = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("chunk", [32, 2])  # vmap over whole batches, and over pieces of them
def test_ewc_fisher_is_the_mean_of_single_sample_squared_gradients_unnormalised(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.lib.training import fisher as fisher_module

    monkeypatch.setattr(fisher_module, "FISHER_CHUNK_MAX", chunk)
    visual = tower()
    fisher = estimate_fisher(visual, [(FISHER_X[:3], FISHER_Y[:3]), (FISHER_X[3:], FISHER_Y[3:])], PROTOS, 10.0)
    reference = tower().eval()  # independent: one backward per image, squared, averaged
    params = vision_params(reference)
    loop = [torch.zeros_like(p) for p in params]
    for i in range(4):
        reference.zero_grad()
        emb = F.normalize(reference(FISHER_X[i:i + 1]), dim=-1)
        F.cross_entropy(10.0 * emb @ PROTOS.T, FISHER_Y[i:i + 1]).backward()
        loop = [acc + p.grad ** 2 / 4 for acc, p in zip(loop, params)]
    assert len(fisher) == len(params)
    for f, ref in zip(fisher, loop):
        torch.testing.assert_close(f, ref, rtol=1e-4, atol=1e-10)
    # the batch-mean gradient squared is a different (smaller) thing, and nothing is normalised to mean 1
    assert not all(abs(f.mean().item() - 1.0) < 1e-3 for f in fisher)
    assert all(p.grad is None for p in vision_params(visual))  # estimating leaves no gradients behind


def test_ewc_term_is_the_fisher_weighted_element_sum() -> None:
    fisher = estimate_fisher(tower(), [(FISHER_X, FISHER_Y)], PROTOS, 10.0)
    t = make(lambda_ewc=5.0, fisher=fisher)
    assert term(t, "lambda_ewc") == 0.0
    move(t)
    hand = sum((f * (p.detach() - a) ** 2).sum().item() for f, p, a in zip(fisher, vision_params(t.visual), t.anchors))
    assert term(t, "lambda_ewc") == pytest.approx(hand, rel=1e-5)
    logs = t.generic_step(None, None, step=1)  # EWC-only: applied on the round-robin's generic steps too
    assert logs["reg_ewc"] == pytest.approx(hand, rel=1e-5)
    with pytest.raises(ValueError, match="Fisher"):
        make(lambda_ewc=5.0)


# ----------------------------------------------------------------------------- GIFT
def test_gift_step_distils_similarity_distributions_and_awc_is_gifts_element_sum() -> None:
    t = make(teacher=True, lambda_gift=1.0, lambda_awc=1.0, teacher_targets="online", lr_backbone=1e-2,
             gift_ita_weight=0.0)
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    logs = t.generic_step(batch(), None, 1, rows)
    # student == teacher at the start of the generic step: L_cd is a KL, exactly 0 up to float error
    assert logs["loss_gift"] == pytest.approx(0.0, abs=1e-5) and logs["reg_awc"] == 0.0
    for step in range(2, 5):
        t.target_step(batch(), LABELS, step)
    logs = t.generic_step(batch(), None, 9, rows)
    assert logs["loss_gift"] > 1e-4 and logs["reg_awc"] > 0
    # the Fisher of that batch, by hand: g² / mean(g²) per tensor, and the penalty is its element sum
    fisher = t.awc_fisher
    assert all(f.mean().item() == pytest.approx(1.0, rel=1e-4) for f in fisher if f.abs().sum() > 0)
    hand = sum((f * (p.detach() - a) ** 2).sum().item() for f, p, a in zip(fisher, t.params(), t.anchors))
    per_tensor_means = sum((f * (p.detach() - a) ** 2).mean().item() for f, p, a in zip(fisher, t.params(), t.anchors))
    logs = t.target_step(batch(), LABELS, 10)  # a target step uses the latest Fisher, as GIFT's per-iteration AWC
    assert logs["reg_awc"] == pytest.approx(hand, rel=1e-5) and hand > 10 * per_tensor_means
    with pytest.raises(AssertionError, match="class rows"):
        t.generic_step(batch(), None, 11, None)
    fresh = make(teacher=True, lambda_gift=1.0, lambda_awc=1.0, teacher_targets="online")
    assert fresh.target_step(batch(), LABELS, 0)["reg_awc"] == 0.0  # before any generic batch: no Fisher yet


# ----------------------------------------------------------------------------- LP-FT
def test_plateau_rule() -> None:
    # relative fall over the last `patience` steps below tol → stop
    assert not plateaued([1.0, 0.5], patience=2, tol=0.01)          # too short to tell
    assert not plateaued([1.0, 0.5, 0.4], patience=2, tol=0.01)     # fell 60 % over 2 steps
    assert plateaued([1.0, 0.5, 0.4, 0.399, 0.3985], patience=2, tol=0.01)  # 0.4 → 0.3985: 0.4 %
    assert not plateaued([1.0, 0.5, 0.4, 0.399, 0.3985], patience=2, tol=0.001)


def test_linear_probe_trains_the_head_only_until_the_loss_plateaus() -> None:
    t = make(lp_max_steps=2000, lp_patience=10, lp_tol=1e-3, lp_lr=0.05)
    before = copy.deepcopy(t.visual.state_dict())
    emb = F.normalize(torch.randn(40, 24, generator=torch.Generator().manual_seed(4)), dim=-1)
    labels = torch.arange(5).repeat(8)
    probe = t.fit_probe(emb, labels, chunk=16)  # chunks: the exact full-batch gradient in pieces
    assert probe["probe_converged"] and 10 < probe["probe_steps"] < 2000
    assert all(torch.equal(before[k], v) for k, v in t.visual.state_dict().items())
    final = losses.margin_softmax_loss(t.classifier(emb), labels, scale=16.0).item()
    assert final == pytest.approx(probe["probe_loss"], rel=0.05)
    # one more probe from there barely moves the loss: it converged rather than stopped early
    again = make(lp_max_steps=10, lp_patience=10, lp_lr=0.05)
    again.classifier.load_state_dict(t.classifier.state_dict())
    assert again.fit_probe(emb, labels)["probe_loss"] > final * (1 - 5e-3)


# ----------------------------------------------------------------------------- selection
@pytest.mark.parametrize("steps, validations, expected", [
    (250, 5, [1, 63, 125, 188, 250]),
    (6, 5, [1, 2, 3, 5, 6]),
    (3, 5, [1, 2, 3]),
    (12584, 34, None),
])
def test_validation_points(steps: int, validations: int, expected: list[int] | None) -> None:
    points = validation_points(steps, validations)
    assert points[0] == 1 and points[-1] == steps and 0 not in points
    assert len(points) == min(steps, validations)
    if expected is not None:
        assert points == expected


def test_selection_never_returns_theta0_even_when_every_update_hurts() -> None:
    t = make(lr_backbone=0.5, steps=6)
    theta0 = copy.deepcopy(t.vision_weights())

    def validate() -> dict[str, float]:  # every update makes validation worse: score = −‖θ − θ0‖
        dist = math.sqrt(sum(((p.detach() - a) ** 2).sum().item() for p, a in zip(t.params(), t.anchors)))
        return {"target": -dist, "generic": -dist}

    images = iter([batch(seed=s) for s in range(6)])
    selection = Selection("all")
    run_steps(t, step_plan(t.cfg), 0, (lambda: (next(images), LABELS), lambda: (None, None, None)), selection,
              validate, set(validation_points(6, 5)))
    assert [row["target_steps"] for row in selection.history] == [1, 2, 3, 5, 6]
    assert all(row["criterion"] < 0 for row in selection.history)  # θ0 (criterion 0) would have won every time
    best = selection.best
    assert best["criterion"] == max(row["criterion"] for row in selection.history)
    assert best["step"] >= 1 and best["target_steps"] >= 1  # the least-bad candidate, still after an update
    assert any(not torch.equal(best["weights"][k], theta0[k]) for k in theta0)
    with pytest.raises(ValueError, match="never a checkpoint candidate"):
        selection.consider(0, 0, {"target": 1.0, "generic": 1.0}, {}, t.vision_weights)


def test_wise_ft_interpolation_hits_both_endpoints_exactly() -> None:
    theta0, theta_ft = tower().state_dict(), {k: v + 1.0 for k, v in tower().state_dict().items()}
    for alpha, expected in ((0.0, theta0), (1.0, theta_ft)):
        out = interpolate_weights(theta0, theta_ft, alpha)
        assert all(torch.equal(out[k], expected[k]) for k in theta0)
    mid = interpolate_weights(theta0, theta_ft, 0.25)
    assert all(torch.allclose(mid[k], theta0[k] + 0.25) for k in theta0)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_weights(theta0, {"x": torch.zeros(1)}, 0.5)


# ----------------------------------------------------------------------------- LoRA (peft)
def test_lora_starts_at_theta0_trains_only_low_rank_updates_and_merges_exactly() -> None:
    theta0 = tower().state_dict()
    t = make(lora_rank=2, lr_backbone=1e-2)
    assert all(torch.equal(t.vision_weights()[k], theta0[k]) for k in theta0)  # B = 0: exactly θ0
    trainable = sum(p.numel() for p in t.optimizer.param_groups[0]["params"])
    assert trainable < sum(v.numel() for v in theta0.values()) / 4
    for step in range(3):
        t.target_step(batch(), LABELS, step)
    merged = t.vision_weights()
    assert merged.keys() == theta0.keys()  # original names: later stages load it like any checkpoint
    changed = {k for k in theta0 if not torch.equal(merged[k], theta0[k])}
    assert changed == {k for k in theta0 if k.endswith(("in_proj_weight", "out_proj.weight", "c_fc.weight",
                                                         "c_proj.weight"))}, changed
    plain = tower()
    plain.load_state_dict(merged)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(x), t.visual.eval()(x), rtol=1e-4, atol=1e-5)


def test_lora_on_the_papers_timm_siglip_tower_trains_and_merges_to_a_plain_tower() -> None:
    import open_clip

    from pipeline.lib import lora

    torch.manual_seed(0)
    visual = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None).visual  # a TimmModel, no weights
    fresh = copy.deepcopy(visual)
    theta0 = {k: v.clone() for k, v in fresh.state_dict().items()}
    model = lora.add_lora(visual, rank=4, alpha=8.0, seed=0)
    targets = lora.lora_targets(fresh)
    assert "trunk.blocks.0.attn.qkv" in targets and "trunk.blocks.11.mlp.fc2" in targets
    assert not any("attn_pool" in name or "patch_embed" in name for name in targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    model.train()
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()
    merged = lora.merged_state_dict(model)
    with torch.no_grad():
        for p in fresh.parameters():  # whatever load_state_dict does not overwrite would show
            p.zero_()
    fresh.load_state_dict(merged, strict=True)
    model.eval()
    with torch.no_grad():
        expected, got = model(x), fresh.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert merged.keys() == theta0.keys()
    assert any(not torch.equal(merged[k], theta0[k]) for k in theta0)  # the step moved the merged weights
