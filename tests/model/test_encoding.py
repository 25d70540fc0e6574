"""The hash-grid encoding (model/encoding.py): exact interpolation on its own grid, hashing only
past the table, gradients into the table, and a grid-encoded model through a checkpoint."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from model.checkpoint import load_checkpoint, save_checkpoint
from model.encoding import TABLE_GAIN, HashGrid, level_resolutions
from model.network import ModelConfig, NeuralExperts
from model.signals.image import experts, reconstruction


def _grid(in_dim: int = 2, log2_table: int = 8, finest: int = 32) -> HashGrid:
    torch.manual_seed(0)
    return HashGrid(in_dim, levels=3, features=2, log2_table=log2_table, base=4, finest=finest, bound=1.0)


def test_levels_grow_geometrically_from_base_to_finest() -> None:
    assert level_resolutions(3, 4, 16) == [4, 8, 16]
    assert level_resolutions(1, 16, 512) == [16]


def test_a_level_is_hashed_only_when_its_vertices_outgrow_the_table() -> None:
    grid = _grid(log2_table=8)  # 256 rows: 5^2 and 12^2 vertices fit, 33^2 do not
    assert grid.hashed.tolist() == [False, False, True]
    assert grid.size.tolist() == [25, 144, 256]
    assert grid.table.shape == (25 + 144 + 256, 2)


@pytest.mark.parametrize("in_dim", [1, 2, 3])
def test_a_vertex_reads_its_own_row_and_midpoints_average_their_corners(in_dim: int) -> None:
    grid = HashGrid(in_dim, levels=1, features=1, log2_table=12, base=4, finest=4, bound=2.0)
    with torch.no_grad():
        grid.table.copy_(torch.arange(grid.table.shape[0], dtype=torch.float32)[:, None])
    vertex = torch.full((1, in_dim), -2.0 + 4.0 / 4)  # vertex 1 on every axis
    row = sum(5**j for j in range(in_dim))  # row-major index of (1, ..., 1)
    assert grid(vertex).item() == pytest.approx(row * TABLE_GAIN)
    midpoint = vertex + 0.5  # half a cell up on every axis: the mean of the cell's 2^d corners
    corners = [row + sum(bit * 5 ** (in_dim - 1 - j) for j, bit in enumerate(c))
               for c in itertools.product((0, 1), repeat=in_dim)]
    assert grid(midpoint).item() == pytest.approx(sum(corners) / len(corners) * TABLE_GAIN)


def test_a_hashed_level_reads_the_rows_of_instant_ngps_hash() -> None:
    grid = HashGrid(2, levels=1, features=1, log2_table=4, base=8, finest=8, bound=1.0)
    assert grid.hashed.tolist() == [True]  # 9^2 vertices, 16 rows
    with torch.no_grad():
        grid.table.copy_(torch.arange(16, dtype=torch.float32)[:, None])

    def row(i: int, j: int) -> int:  # eq. 4: XOR of coordinate x prime, modulo the table
        return ((i * 1) ^ (j * 2_654_435_761)) % 16

    vertex = torch.tensor([[-1.0 + 2 * 3 / 8, -1.0 + 2 * 5 / 8]])  # vertex (3, 5)
    assert grid(vertex).item() == pytest.approx(row(3, 5) * TABLE_GAIN)
    corners = [row(3 + a, 5 + b) for a, b in itertools.product((0, 1), repeat=2)]
    midpoint = vertex + 1 / 8  # half a cell up on both axes
    assert grid(midpoint).item() == pytest.approx(sum(corners) / 4 * TABLE_GAIN)


def test_gradients_reach_the_table_rows_the_points_touch() -> None:
    grid = _grid()
    x = torch.rand(64, 2) * 2 - 1
    grid(x).pow(2).sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
    net = NeuralExperts(ModelConfig(2, 3, expert_width=8, n_experts=2, manager_encoder_width=8,
                                    manager_width=8, encoding="grid", grid_levels=3,
                                    grid_log2_table=8, grid_finest_resolution=32))
    values, logits = net(x)
    (values.pow(2).mean() + logits.pow(2).mean()).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_a_grid_encoded_model_round_trips_and_renders_at_any_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = NeuralExperts(ModelConfig(2, 3, expert_width=8, n_experts=4, manager_encoder_width=8,
                                    manager_width=8, encoding="grid", grid_levels=4,
                                    grid_log2_table=10, grid_finest_resolution=64)).eval()
    config = {"kind": "image", "model": net.config.to_dict(), "signal": {"height": 48, "width": 64}}
    save_checkpoint(tmp_path, net, config, {"psnr": 1.0})
    loaded, loaded_config = load_checkpoint(tmp_path)
    assert loaded_config["model"]["encoding"] == "grid"
    x = torch.rand(3000, 2) * 2 - 1
    assert torch.equal(net.predict(x)[0], loaded.predict(x)[0])
    assert torch.equal(loaded.predict(x)[0], loaded.predict_dense(x)[0])
    meta = loaded_config["signal"]
    for width, height in ((None, None), (5, 7), (128, 96)):
        for output in (reconstruction, experts):
            image = Image.open(io.BytesIO(output(loaded, meta, width, height).data))
            assert image.size == (width or 64, height or 48)


def test_a_config_saved_before_the_encoding_options_still_loads() -> None:
    old = {"in_dim": 2, "out_dim": 3, "activation": "sine", "encoder_width": 128, "expert_width": 128,
           "n_experts": 4, "manager_encoder_width": 128, "manager_width": 128,
           "conditioning": "concat", "layers": 4, "fourier_frequencies": 0}
    assert ModelConfig(**old).encoding == "mlp"
