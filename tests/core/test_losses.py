import math

import pytest
import torch
import torch.nn.functional as F

from lors_distill.core.losses import SOFT_LOSSES, soft_loss, symmetric_infonce

Z = torch.tensor([[2.0, -1.0], [0.5, 1.0]])
S = torch.tensor([[1.0, 0.2], [0.6, 0.9]])


def bce_term(z: float, s: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(s * math.log(p) + (1 - s) * math.log(1 - p))


def test_wbce_hand_computed():
    # positives (S > 0.5): (0,0), (1,0), (1,1); negative: (0,1)
    positive = (bce_term(2.0, 1.0) + bce_term(0.5, 0.6) + bce_term(1.0, 0.9)) / 3
    negative = bce_term(-1.0, 0.2)
    assert soft_loss("wbce")(Z, S).item() == pytest.approx((positive + negative) / 2, rel=1e-6)


def test_bce_and_mse_hand_computed():
    terms = [
        bce_term(z, s) for z, s in zip(Z.flatten().tolist(), S.flatten().tolist(), strict=True)
    ]
    assert soft_loss("bce")(Z, S).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    sig = [1 / (1 + math.exp(-z)) for z in Z.flatten().tolist()]
    mse = sum((p - s) ** 2 for p, s in zip(sig, S.flatten().tolist(), strict=True)) / 4
    assert soft_loss("mse")(Z, S).item() == pytest.approx(mse, rel=1e-6)


def log_softmax_rows(z):
    return [[v - math.log(sum(math.exp(x) for x in row)) for v in row] for row in z]


def test_soft_infonce_and_cwcl_hand_computed():
    z, s = Z.tolist(), S.tolist()
    rows = log_softmax_rows(z)
    cols = log_softmax_rows([list(c) for c in zip(*z, strict=True)])  # per column
    st = [list(c) for c in zip(*s, strict=True)]
    row_loss = -sum(s[i][j] * rows[i][j] for i in range(2) for j in range(2)) / 2
    col_loss = -sum(st[j][i] * cols[j][i] for i in range(2) for j in range(2)) / 2
    assert soft_loss("infonce")(Z, S).item() == pytest.approx((row_loss + col_loss) / 2, rel=1e-6)
    row_n = [[v / (sum(r) + 1e-6) for v in r] for r in s]  # the reference's + 1e-6
    col_n = [[v / (sum(c) + 1e-6) for v in c] for c in st]
    cw_row = -sum(row_n[i][j] * rows[i][j] for i in range(2) for j in range(2)) / 2
    cw_col = -sum(col_n[j][i] * cols[j][i] for i in range(2) for j in range(2)) / 2
    assert soft_loss("cwcl")(Z, S).item() == pytest.approx((cw_row + cw_col) / 2, rel=1e-6)


def test_kl_hand_computed():
    def kl_rows(z, s):
        p = [[math.exp(10 * v) / sum(math.exp(10 * x) for x in row) for v in row] for row in s]
        q = log_softmax_rows(z)
        # mean over all B x B pointwise terms (the reference's KLDivLoss(reduction="mean"))
        return sum(p[i][j] * (math.log(p[i][j]) - q[i][j]) for i in range(2) for j in range(2)) / 4

    zt = [list(c) for c in zip(*Z.tolist(), strict=True)]
    st = [list(c) for c in zip(*S.tolist(), strict=True)]
    expected = 0.5 * (kl_rows(Z.tolist(), S.tolist()) + kl_rows(zt, st))
    assert soft_loss("kl")(Z, S).item() == pytest.approx(expected, rel=1e-5)


def test_identity_targets_reduce_to_one_hot_forms():
    torch.manual_seed(0)
    logits = torch.randn(5, 5) * 3
    eye = torch.eye(5)
    one_hot_infonce = symmetric_infonce(logits)
    assert soft_loss("infonce")(logits, eye).item() == pytest.approx(
        one_hot_infonce.item(), rel=1e-6
    )
    assert soft_loss("cwcl")(logits, eye).item() == pytest.approx(one_hot_infonce.item(), rel=1e-5)
    diag = F.binary_cross_entropy_with_logits(logits.diagonal(), torch.ones(5))
    off = F.binary_cross_entropy_with_logits(logits[~eye.bool()], torch.zeros(20))
    assert soft_loss("wbce")(logits, eye).item() == pytest.approx(
        ((diag + off) / 2).item(), rel=1e-6
    )
    # KL against softmax(10 I) is one-hot InfoNCE minus the (small) entropy of the sharp
    # target, divided by B (the mean runs over all B x B entries)
    sharp = F.softmax(10 * eye, dim=1)
    entropy = -(sharp * sharp.log()).sum(1).mean()
    assert soft_loss("kl")(logits, eye).item() == pytest.approx(
        ((one_hot_infonce - entropy) / 5).item(), abs=2e-3
    )
    assert soft_loss("mse")(logits, eye).item() == pytest.approx(
        ((torch.sigmoid(logits) - eye) ** 2).mean().item(), rel=1e-6
    )


def test_losses_registry_and_gradients():
    assert set(SOFT_LOSSES) == {"wbce", "bce", "infonce", "cwcl", "kl", "mse"}
    with pytest.raises(ValueError, match="loss 'hinge': use one of wbce"):
        soft_loss("hinge")
    for name in SOFT_LOSSES:
        z = Z.clone().requires_grad_(True)
        s = S.clone().requires_grad_(True)
        soft_loss(name)(z, s).backward()
        assert z.grad.abs().sum() > 0, name
        assert s.grad.abs().sum() > 0, name


def test_wbce_counts_an_empty_part_as_zero():
    """All targets > 0.5: the reference's (positive mean + 0) / 2, not the plain mean."""
    s = torch.tensor([[1.0, 0.7], [0.6, 0.9]])
    terms = [
        bce_term(z, t) for z, t in zip(Z.flatten().tolist(), s.flatten().tolist(), strict=True)
    ]
    assert soft_loss("wbce")(Z, s).item() == pytest.approx(sum(terms) / 4 / 2, rel=1e-6)
    negatives = torch.tensor([[0.1, 0.2], [0.0, 0.5]])  # 0.5 counts as negative
    terms = [
        bce_term(z, t)
        for z, t in zip(Z.flatten().tolist(), negatives.flatten().tolist(), strict=True)
    ]
    assert soft_loss("wbce")(Z, negatives).item() == pytest.approx(sum(terms) / 4 / 2, rel=1e-6)


def test_cwcl_stays_finite_when_a_learned_row_sum_is_not_positive():
    """A learned S can have a row summing to <= 0: divided by (sum + 1e-6), as the reference."""
    s = torch.tensor([[0.5, -0.5], [-0.2, 1.0]])  # row 0 sums to 0, column 0 to 0.3
    z, st = Z.tolist(), s.T.tolist()
    rows = log_softmax_rows(z)
    cols = log_softmax_rows([list(c) for c in zip(*z, strict=True)])
    row_terms = [
        sum(s.tolist()[i][j] * rows[i][j] for j in range(2)) / (sum(s.tolist()[i]) + 1e-6)
        for i in range(2)
    ]
    col_terms = [
        sum(st[j][i] * cols[j][i] for i in range(2)) / (sum(st[j]) + 1e-6) for j in range(2)
    ]
    expected = 0.5 * (-sum(row_terms) / 2 - sum(col_terms) / 2)
    value = soft_loss("cwcl")(Z, s).item()
    assert math.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-5)
