"""VCNet baseline: sizes, probabilistic context normalisation, output contract."""

from pathlib import Path

import pytest
import torch
import yaml

from blindinpaint.config import ConfigError, from_dict
from blindinpaint.models.vcnet import PCN, VCNet, VCNetConfig, VCNetOutput, VCResBlock

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _model_cfg(name: str) -> VCNetConfig:
    data = yaml.safe_load((CONFIGS / name).read_text())
    assert data["task"] == "vcnet"
    return from_dict(VCNetConfig, data["model"], prefix="model")


@pytest.fixture(scope="module")
def cpu_vcnet() -> VCNet:
    torch.manual_seed(0)
    return VCNet(_model_cfg("vcnet_cpu.yaml")).eval()


def _image(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _features_and_hole(seed: int = 0):
    """Features whose hole region has clearly different statistics from the valid region."""
    gen = torch.Generator().manual_seed(seed)
    hole = torch.zeros(2, 1, 16, 16)
    hole[0, :, 4:12, 2:10] = 1
    hole[1, :, :6, :] = 1
    valid_part = torch.randn(2, 5, 16, 16, generator=gen) * 0.5 + 1.0
    hole_part = torch.randn(2, 5, 16, 16, generator=gen) * 3.0 - 4.0
    return hole_part * hole + valid_part * (1 - hole), hole


def _masked_mean_std(x: torch.Tensor, mask: torch.Tensor):
    n = mask.sum(dim=(2, 3))
    mean = (x * mask).sum(dim=(2, 3)) / n
    var = ((x - mean[..., None, None]) ** 2 * mask).sum(dim=(2, 3)) / n
    return mean, var.sqrt()


def test_paper_size_parameter_counts():
    cfg = _model_cfg("vcnet_paper.yaml")
    with torch.device("meta"):
        model = VCNet(cfg)
    total, mpn, rin = _params(model), _params(model.mpn), _params(model.rin)
    assert abs(total - 3.88e6) <= 0.05 * 3.88e6, total
    assert abs(mpn - 1.38e6) <= 0.02 * 1.38e6, mpn
    assert abs(rin - 2.50e6) <= 0.02 * 2.50e6, rin


def test_cpu_config_is_about_hcl_tiny_size():
    with torch.device("meta"):
        model = VCNet(_model_cfg("vcnet_cpu.yaml"))
    assert 0.8 * 0.8e6 <= _params(model) <= 1.2 * 0.8e6, _params(model)


def test_pcn_maps_hole_statistics_to_valid_region():
    x, hole = _features_and_hole()
    out = PCN(5, gate="fixed", fixed_gate=1.0, eps=1e-8)(x, hole)
    mean_valid, std_valid = _masked_mean_std(x, 1 - hole)
    mean_hole_before, _ = _masked_mean_std(x, hole)
    mean_hole, std_hole = _masked_mean_std(out, hole)
    assert (mean_hole_before - mean_valid).abs().min() > 2  # the setup really differs
    torch.testing.assert_close(mean_hole, mean_valid, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std_hole, std_valid, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gate, fixed", [("se", 0.5), ("fixed", 0.5), ("fixed", 1.0)])
def test_pcn_leaves_valid_pixels_unchanged(gate, fixed):
    torch.manual_seed(0)
    x, hole = _features_and_hole(seed=1)
    out = PCN(5, gate=gate, reduction=16, fixed_gate=fixed)(x, hole)
    valid = (hole == 0).expand_as(x)
    assert torch.equal(out[valid], x[valid])
    assert not torch.allclose(out[~valid], x[~valid])


def test_pcn_gate_mixes_transfer_and_identity():
    x, hole = _features_and_hole(seed=2)
    half = PCN(5, gate="fixed", fixed_gate=0.5)
    expected = (0.5 * half.transfer(x, hole) + 0.5 * x) * hole + x * (1 - hole)
    torch.testing.assert_close(half(x, hole), expected)
    torch.testing.assert_close(PCN(5, gate="fixed", fixed_gate=0.0)(x, hole), x)


def test_pcn_soft_mask_used_as_is():
    x, hole = _features_and_hole(seed=3)
    pcn = PCN(5, gate="fixed", fixed_gate=1.0)
    soft = hole * 0.5
    t = pcn.transfer(x, soft)
    torch.testing.assert_close(pcn(x, soft), t * soft + x * (1 - soft))


def test_residual_block_shortcut_and_stride():
    same = VCResBlock(8, 8, dilation=4)
    down = VCResBlock(8, 16, kernel=5, stride=2)
    assert isinstance(same.shortcut, torch.nn.Identity)
    assert isinstance(down.shortcut, torch.nn.Conv2d) and down.shortcut.kernel_size == (1, 1)
    x = torch.randn(1, 8, 12, 20)
    assert same(x).shape == (1, 8, 12, 20) and down(x).shape == (1, 16, 6, 10)


@pytest.mark.parametrize("size", [(67, 101), (64, 48), (3, 5)])
def test_output_contract_any_size(cpu_vcnet, size):
    image = _image(2, *size)
    with torch.no_grad():
        out = cpu_vcnet(image)
    assert isinstance(out, VCNetOutput)
    assert out.hole.shape == out.prob_hole.shape == (2, 1, *size)
    assert out.rec.shape == image.shape and out.refined is out.rec
    assert torch.isfinite(out.rec).all() and out.rec.abs().max() <= 1
    assert out.prob_hole.min() >= 0 and out.prob_hole.max() <= 1
    assert torch.equal(out.hole, (out.prob_hole >= 0.5).float())


def test_given_hole_steers_restoration_not_detection(cpu_vcnet):
    image = _image(1, 32, 40, seed=4)
    given = torch.zeros(1, 1, 32, 40)
    given[..., 8:20, 10:30] = 1
    with torch.no_grad():
        predicted, guided = cpu_vcnet(image), cpu_vcnet(image, given_hole=given)
    torch.testing.assert_close(guided.prob_hole, predicted.prob_hole)
    assert not torch.allclose(guided.rec, predicted.rec)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_neck_blocks_restoration_gradient_into_mpn(detach):
    torch.manual_seed(0)
    model = VCNet(VCNetConfig(mpn_channels=8, neck_channels=16, rin_channels=8, detach_neck=detach))
    out = model(_image(1, 16, 16), given_hole=torch.ones(1, 1, 16, 16).tril())
    out.rec.square().mean().backward()
    first_mpn_conv = model.mpn.encoder[0].conv1.weight
    assert (first_mpn_conv.grad is None) == detach


def test_bad_gate_is_config_error():
    with pytest.raises(ConfigError, match="pcn_gate"):
        from_dict(VCNetConfig, {"pcn_gate": "learned"}, prefix="model")
    with pytest.raises(ConfigError, match="pcn_fixed_gate"):
        from_dict(VCNetConfig, {"pcn_fixed_gate": 2.0}, prefix="model")
