"""The network: the paper's parameter counts, routed == dense inference, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.network import ACTIVATIONS, ModelConfig, NeuralExperts, count_parameters
from model.presets import model_config


@pytest.mark.parametrize(
    ("model", "task", "in_dim", "out_dim", "expected"),
    [
        ("neural-experts", "image", 2, 3, 365_968),
        ("siren", "image", 2, 3, 99_843),
        ("siren-wider", "image", 2, 3, 642_819),
        ("vanilla-moe", "image", 2, 3, 349_584),
        ("neural-experts", "sdf", 3, 1, 1_285_904),
        ("neural-experts", "sdf-small", 3, 1, 323_472),
        ("siren", "sdf", 3, 1, 1_578_497),
        ("siren", "sdf-small", 3, 1, 396_033),
    ],
)
def test_parameter_counts_match_the_paper(
    model: str, task: str, in_dim: int, out_dim: int, expected: int
) -> None:
    assert count_parameters(NeuralExperts(model_config(model, task, in_dim, out_dim))) == expected


def test_siren_init_follows_the_paper() -> None:
    net = NeuralExperts(model_config("neural-experts", "image", 2, 3))
    first = net.expert_encoder.layers[0].weight
    hidden = net.experts.layers[1].weight
    assert first.abs().max() <= 1 / 2  # U(-1/fan_in, 1/fan_in), fan_in = 2
    assert hidden.abs().max() <= (6 / 128) ** 0.5 / 30
    assert all(not p.detach().any() for n, p in net.named_parameters() if n.endswith("bias"))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("conditioning", ["concat", "max", "mean", "none"])
def test_routed_inference_equals_dense(activation: str, conditioning: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(2, 3, activation, 32, 16, 4, 32, 32, conditioning)  # type: ignore[arg-type]
    net = NeuralExperts(config).eval()
    x = torch.rand(5000, 2) * 2 - 1
    dense, dense_ids = net.predict_dense(x)
    assert dense_ids.unique().numel() > 1, "a random manager should use several experts"
    for chunk in (1, 777, 4096, 10_000):
        routed, ids = net.predict(x[:1000] if chunk == 1 else x, chunk=chunk)
        n = routed.shape[0]
        assert torch.equal(ids, dense_ids[:n])
        torch.testing.assert_close(routed, dense[:n], rtol=1e-5, atol=1e-6)


def test_siren_routes_everything_to_its_one_decoder() -> None:
    net = NeuralExperts(model_config("siren", "image", 2, 1)).eval()
    x = torch.rand(100, 2)
    values, ids = net.predict(x)
    assert ids.eq(0).all() and values.shape == (100, 1)
    torch.testing.assert_close(values, net(x)[0][0])


def test_bad_configs_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(2, 3, activation="relu")
    with pytest.raises(ValueError, match="equal encoder widths"):
        ModelConfig(3, 1, "sine", 512, 64, 8, 128, 128, "max")
    for k in (1, 33):
        with pytest.raises(ValueError, match="takes 2 to 32 experts"):
            model_config("neural-experts", "image", 2, 3, n_experts=k)
    assert model_config("neural-experts", "image", 2, 3, n_experts=32).n_experts == 32
    with pytest.raises(ValueError, match="unknown model"):
        model_config("transformer", "image", 2, 3)
    with pytest.raises(AssertionError, match="expected coordinates"):
        NeuralExperts(model_config("neural-experts", "image", 2, 3))(torch.rand(4, 3))


def _refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


@pytest.mark.parametrize("activation", ["sine", "softplus-ff"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path, activation: str) -> None:
    net = NeuralExperts(model_config("neural-experts", "image", 2, 3, activation)).eval()
    config = {"kind": "image", "model": net.config.to_dict(), "signal": {}}
    save_checkpoint(tmp_path, net, config, {"psnr": 1.0, "trimap_iou": math.nan})
    loaded, loaded_config = load_checkpoint(tmp_path)
    x = torch.rand(2000, 2) * 2 - 1
    assert torch.equal(net.predict(x)[0], loaded.predict(x)[0])
    assert loaded_config == config
    assert json.loads((tmp_path / "metrics.json").read_text(), parse_constant=_refuse) == {
        "psnr": 1.0, "trimap_iou": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "metrics.json", "model.safetensors"
    ]
