"""QR-LoRA's basis ablations (qr, qr_nopivot, svd, random): each update against an independent numpy
construction, equal ranks give equal counts, each kind has its own cache entries, adapters round-trip."""
import numpy as np
import peft
import pytest
import torch

from qrlora import (BasisCache, QRLoRAConfig, QRLoRALinear, apply_method, export_peft, load_adapter, save_adapter,
                    select_rank)
from qrlora.basis import factorise, weight_key
from tiny_models import LAYER0_FFN_PATHS, tiny_inputs, tiny_model

BASES = ["qr", "qr_nopivot", "svd", "random"]


def numpy_directions(weight: np.ndarray, basis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q, R in W's column order, diag) built with numpy alone (scipy's pivoted QR for the paper's: numpy
    has none)."""
    if basis == "qr":
        import scipy.linalg
        q, r, pivots = scipy.linalg.qr(weight, mode="economic", pivoting=True)
        unpivoted = np.zeros_like(r)
        unpivoted[:, pivots] = r
        return q, unpivoted, np.abs(np.diag(r))
    if basis == "qr_nopivot":
        q, r = np.linalg.qr(weight)
        return q, r, np.abs(np.diag(r))
    if basis == "svd":
        u, s, vt = np.linalg.svd(weight, full_matrices=False)
        return u, np.diag(s) @ vt, s
    torch_weight = torch.from_numpy(weight)
    gaussian = np.random.default_rng(int(weight_key(torch_weight)[:16], 16)).standard_normal(
        (weight.shape[0], min(weight.shape)))
    q, _ = np.linalg.qr(gaussian)
    return q, q.T @ weight, np.abs(np.diag(q.T @ weight))


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_update_equals_numpy_construction_for_random_lambdas(basis, shape):
    weight = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    linear = torch.nn.Linear(shape[1], shape[0], dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(weight)
    q, r, diag = numpy_directions(weight.numpy(), basis)
    rank = 5
    lambdas = np.random.default_rng(0).standard_normal(rank)
    layer = QRLoRALinear(linear, factorise(weight, basis), rank)
    with torch.no_grad():
        layer.lambdas.copy_(torch.from_numpy(lambdas))
    expected = q[:, :rank] @ np.diag(lambdas) @ r[:rank]
    np.testing.assert_allclose(layer.delta_weight().detach().numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(factorise(weight, basis).diag, diag, rtol=1e-12, atol=1e-12)
    if basis != "random" or shape[0] <= shape[1]:  # a random Q of fewer columns than rows spans part of W only
        np.testing.assert_allclose(q @ r, weight.numpy(), atol=1e-12)


def test_bases_differ_and_random_is_reproducible():
    weight = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    directions = {basis: factorise(weight, basis).q[:, 0] for basis in BASES}
    for a in BASES:  # first directions pairwise different (up to sign)
        for b in BASES:
            if a < b:
                assert not np.allclose(np.abs(directions[a]), np.abs(directions[b]), atol=1e-6), (a, b)
    np.testing.assert_array_equal(factorise(weight, "random").q, factorise(weight.clone(), "random").q)


@pytest.mark.parametrize("arch, matrix", [("bert", "q"), ("bert", "up"), ("llama", "down")])
def test_equal_rank_configurations_have_equal_counts(arch, matrix):
    counts = {basis: apply_method(tiny_model(arch), QRLoRAConfig(rank_rule="rank", rank=3, basis=basis,
                                                                 layers="all", matrices=matrix))[1].adapter_params
              for basis in BASES}
    assert set(counts.values()) == {3 * 3}, counts


@pytest.mark.parametrize("basis", ["svd", "qr_nopivot"])
def test_rank_rules_read_the_bases_own_diagonal(basis):
    model = tiny_model("bert")
    name = LAYER0_FFN_PATHS["bert"]["up"]
    diag = numpy_directions(model.get_submodule(name).weight.detach().double().numpy(), basis)[2]
    _, report = apply_method(model, QRLoRAConfig(tau=0.5, basis=basis, layers=[0], matrices="up"))
    kept = int(np.sum(np.cumprod(diag >= 0.5 * diag[0])))
    assert report.ranks[name] == kept == select_rank(diag, "relative", 0.5)
    np.testing.assert_allclose(report.modules[name].spectrum, diag, rtol=1e-12)


def test_each_basis_has_its_own_cache_entries(tmp_path):
    cache = BasisCache(tmp_path)
    weight = torch.randn(8, 12, generator=torch.Generator().manual_seed(2))
    keys = {basis: cache.get(weight, basis)[0] for basis in BASES}
    assert set(keys.values()) == {weight_key(weight)}  # the weight's own hash, whatever the basis
    stems = sorted(path.stem for path in tmp_path.glob("*.safetensors"))
    assert stems == sorted([weight_key(weight)] + [f"{weight_key(weight)}-{b}" for b in BASES[1:]])
    assert cache.misses == 4
    fresh = BasisCache(tmp_path)
    np.testing.assert_array_equal(fresh.get(weight, "svd")[1].q, factorise(weight, "svd").q)
    assert (fresh.hits, fresh.misses) == (1, 0)


def test_unknown_basis_names_the_field():
    with pytest.raises(ValueError, match=r"^basis: unknown 'pca'; choose one of qr, qr_nopivot, svd, random$"):
        QRLoRAConfig(basis="pca")


@pytest.mark.parametrize("basis", ["svd", "random"])
def test_saved_and_exported_adapters_reproduce_the_logits(tmp_path, basis):
    config = QRLoRAConfig(tau=0.3, basis=basis, layers="last:2", matrices="q,up")
    model, report = apply_method(tiny_model("bert"), config, BasisCache())
    with torch.no_grad():
        for name in report.modules:
            model.get_submodule(name).lambdas.normal_(generator=torch.Generator().manual_seed(4))
    expected = model(**tiny_inputs()).logits
    save_adapter(model, report, config, tmp_path / "adapter")
    reloaded, _ = load_adapter(tiny_model("bert"), tmp_path / "adapter", BasisCache())
    torch.testing.assert_close(reloaded(**tiny_inputs()).logits, expected, rtol=0, atol=0)
    export_peft(model, tmp_path / "lora")
    peft_model = peft.PeftModel.from_pretrained(tiny_model("bert"), tmp_path / "lora")
    torch.testing.assert_close(peft_model(**tiny_inputs()).logits, expected, rtol=1e-5, atol=1e-6)


def test_trials_record_the_basis_only_when_not_the_papers():
    """Records of pivoted-QR trials stay as they were before `basis` existed; configurations read every QR-LoRA
    run's basis (unrecorded: qr), so old and new runs of one configuration group together."""
    from types import SimpleNamespace

    from sweeps.aggregate import config_params
    from trainables.config import TrialConfig

    assert "basis" not in TrialConfig(method="qrlora").params()
    assert TrialConfig(method="qrlora", basis="svd").params()["basis"] == "svd"
    assert "basis" not in TrialConfig(method="lora", basis="svd").params()
    assert TrialConfig(method="qrlora", basis="random").method_config().basis == "random"

    def run(params):
        return SimpleNamespace(data=SimpleNamespace(params=params))

    assert config_params(run({"method": "qrlora", "tau": "0.5"}))["basis"] == "qr"
    assert config_params(run({"method": "qrlora", "basis": "svd"}))["basis"] == "svd"
    assert "basis" not in config_params(run({"method": "lora"}))
