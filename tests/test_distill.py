"""Distillation losses, checked against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from agora.method.distill import distillation_loss, regression_distillation_loss

LOGITS = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
LABELS = torch.tensor([0, 2])
TEACHER = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
ALL = torch.tensor([True, True])


def hand_loss(logits, label, teacher, alpha, t):
    """The formula written out with Python floats for one example."""
    q = [math.exp(z / t) for z in logits]
    q = [x / sum(q) for x in q]
    p = [x ** (1 / t) for x in teacher]
    p = [x / sum(p) for x in p]
    ce = -math.log(math.exp(logits[label]) / sum(math.exp(z) for z in logits))
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return (1 - alpha) * ce + alpha * t * t * kl


def test_alpha_zero_is_cross_entropy():
    loss, per = distillation_loss(LOGITS, LABELS, TEACHER, ALL, alpha=0.0, temperature=2.0)
    assert torch.allclose(per, F.cross_entropy(LOGITS, LABELS, reduction="none"))
    assert torch.allclose(loss, F.cross_entropy(LOGITS, LABELS))


def test_no_teacher_at_all_is_cross_entropy():
    loss, _ = distillation_loss(LOGITS, LABELS, None, None, alpha=0.5, temperature=2.0)
    assert torch.allclose(loss, F.cross_entropy(LOGITS, LABELS))


def test_teacher_equal_to_student_gives_zero_kl():
    own = LOGITS.softmax(-1)  # at T = 1; softened by T inside, it equals softmax(logits / T)
    loss, per = distillation_loss(LOGITS, LABELS, own, ALL, alpha=1.0, temperature=3.0)
    assert per.abs().max() < 1e-5 and loss.abs() < 1e-5


def test_matches_hand_computation_2x3():
    alpha, t = 0.3, 2.0
    loss, per = distillation_loss(LOGITS, LABELS, TEACHER, ALL, alpha=alpha, temperature=t)
    expected = [hand_loss(LOGITS[i].tolist(), int(LABELS[i]), TEACHER[i].tolist(), alpha, t) for i in range(2)]
    assert per.tolist() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_softening_equals_teacher_logits_over_t():
    teacher_logits = torch.tensor([[2.0, -1.0, 0.5]])
    student = torch.tensor([[0.1, 0.2, 0.3]])
    t = 4.0
    _, per = distillation_loss(student, torch.tensor([0]), teacher_logits.softmax(-1), None, 1.0, t)
    p_t = (teacher_logits / t).softmax(-1)
    kl = F.kl_div(F.log_softmax(student / t, -1), p_t, reduction="sum") * t * t
    assert per.item() == pytest.approx(kl.item(), rel=1e-5)


def test_rows_without_teacher_get_plain_ce_and_no_nan_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    teacher = TEACHER.clone()
    teacher[1] = float("nan")
    has = torch.tensor([True, False])
    loss, per = distillation_loss(logits, LABELS, teacher, has, alpha=0.5, temperature=2.0)
    assert per[1].item() == pytest.approx(F.cross_entropy(LOGITS[1:], LABELS[1:]).item())
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_fp32_even_for_bf16_inputs():
    loss, per = distillation_loss(LOGITS.bfloat16(), LABELS, TEACHER.bfloat16(), ALL, 0.5, 2.0)
    assert loss.dtype == torch.float32 and per.dtype == torch.float32
    ref, _ = distillation_loss(LOGITS.bfloat16().float(), LABELS, TEACHER.bfloat16().float(), ALL, 0.5, 2.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_weights_give_weighted_mean():
    w = torch.tensor([3.0, 1.0])
    loss, per = distillation_loss(LOGITS, LABELS, TEACHER, ALL, 0.5, 2.0, weights=w)
    assert loss.item() == pytest.approx(((3 * per[0] + per[1]) / 4).item(), rel=1e-6)
    same, _ = distillation_loss(LOGITS, LABELS, TEACHER, ALL, 0.5, 2.0, weights=torch.ones(2))
    plain, _ = distillation_loss(LOGITS, LABELS, TEACHER, ALL, 0.5, 2.0)
    assert same.item() == pytest.approx(plain.item())


def test_soft_only_drops_ce_and_gives_kl_full_weight():
    labels = torch.tensor([0, -100])  # generated row: gold label is a placeholder
    soft = torch.tensor([False, True])
    _, per = distillation_loss(LOGITS, labels, TEACHER, ALL, alpha=0.3, temperature=2.0, soft_only=soft)
    _, kl_only = distillation_loss(LOGITS, LABELS, TEACHER, ALL, alpha=1.0, temperature=2.0)
    _, mixed = distillation_loss(LOGITS, LABELS, TEACHER, ALL, alpha=0.3, temperature=2.0)
    assert per[1].item() == pytest.approx(kl_only[1].item(), rel=1e-6)
    assert per[0].item() == pytest.approx(mixed[0].item(), rel=1e-6)


def test_regression_mix_and_masks():
    pred = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    gold = torch.tensor([1.5, float("nan"), 2.0])
    teacher = torch.tensor([0.0, 2.5, float("nan")])
    has = torch.tensor([True, True, False])
    soft = torch.tensor([False, True, False])
    loss, per = regression_distillation_loss(pred, gold, teacher, has, alpha=0.25, soft_only=soft)
    assert per.dtype == torch.float32
    assert per.tolist() == pytest.approx([0.75 * 0.25 + 0.25 * 1.0, 0.25, 1.0])
    assert loss.item() == pytest.approx(sum(per.tolist()) / 3)
    p = pred.float().requires_grad_(True)
    weights = torch.tensor([1.0, 2.0, 1.0])
    regression_distillation_loss(p, gold, teacher, has, 0.25, weights=weights, soft_only=soft)[0].backward()
    assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("alpha,t,name", [(-0.1, 2.0, "alpha"), (1.5, 2.0, "alpha"), (0.5, 0.0, "temperature"),
                                          (0.5, -1.0, "temperature")])
def test_invalid_settings_are_refused_by_the_schema_naming_the_key(alpha, t, name):
    """alpha and T are checked once, when the recipe loads (not on every training step)."""
    from agora.config import RunConfig

    with pytest.raises(ValueError, match=name) as err:
        RunConfig.model_validate({"task": "rte", "agora": {"alpha": alpha, "temperature": t}})
    assert "agora" in str(err.value)
