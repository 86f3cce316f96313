"""GDN generator / dense detector: sizes, shape contracts, mask convention, compositing."""

from pathlib import Path

import pytest
import torch
import yaml

from blindinpaint.config import ConfigError, from_dict
from blindinpaint.models.gdn import GDN, DenseDetector, GDNConfig, GDNGenerator, GDNResidualBlock

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _model_cfg(name: str) -> GDNConfig:
    data = yaml.safe_load((CONFIGS / name).read_text())
    assert data["task"] == "gdn"
    return from_dict(GDNConfig, data["model"], prefix="model")


@pytest.fixture(scope="module")
def cpu_gdn() -> GDN:
    torch.manual_seed(0)
    return GDN(_model_cfg("gdn_cpu.yaml")).eval()


def _batch(h: int, w: int, b: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=gen)
    hole = (torch.rand(b, 1, h, w, generator=gen) > 0.7).float()
    return image, hole


def test_paper_size_parameter_counts():
    cfg = _model_cfg("gdn_paper.yaml")
    with torch.device("meta"):
        gen, det = GDNGenerator(cfg), DenseDetector(cfg)
    assert abs(_params(gen) - 10.78e6) <= 0.02 * 10.78e6, _params(gen)
    assert abs(_params(det) - 2.27e6) <= 0.02 * 2.27e6, _params(det)
    # "no conv biases" in the generator; every detector conv has one
    assert all(m.bias is None for m in gen.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    det_convs = [m for m in det.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(det_convs) == 7 and all(m.bias is not None and m.kernel_size == (4, 4) for m in det_convs)


@pytest.mark.parametrize("size", [(64, 64), (67, 101), (5, 3)])
def test_shapes_any_size(cpu_gdn, size):
    image, hole = _batch(*size)
    with torch.no_grad():
        out = cpu_gdn(image, hole)
        logits = cpu_gdn.detector(image)
    assert out.raw.shape == out.inpainted.shape == image.shape
    assert out.artifact.shape == hole.shape
    assert logits.shape == (2, 2, *size)
    for t in (out.raw, out.artifact):
        assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1


def test_detector_probability_is_softmax_channel_one(cpu_gdn):
    image, _ = _batch(32, 36, b=1)
    with torch.no_grad():
        logits = cpu_gdn.detector(image)
        v = cpu_gdn.detector.artifact_prob(image)
    assert v.shape == (1, 1, 32, 36) and v.min() >= 0 and v.max() <= 1
    expected = torch.exp(logits[:, 1]) / torch.exp(logits).sum(1)
    torch.testing.assert_close(v[:, 0], expected)


def test_forward_runs_detector_on_raw_output(cpu_gdn):
    image, hole = _batch(32, 32)
    with torch.no_grad():
        out = cpu_gdn(image, hole)
        torch.testing.assert_close(out.artifact, cpu_gdn.detector.artifact_prob(out.raw))


def test_inpaint_keeps_known_pixels_bit_identical(cpu_gdn):
    image, hole = _batch(67, 101)
    with torch.no_grad():
        result = cpu_gdn.inpaint(image, hole)
        raw = cpu_gdn.generator(image, hole)
    known = (hole < 0.5).expand_as(image)
    assert torch.equal(result[known], image[known])
    assert torch.equal(result[~known], raw[~known])
    assert not torch.equal(result[~known], image[~known])


def test_generator_never_sees_hole_content(cpu_gdn):
    """Holes are filled with 1 before the generator: what was under them cannot matter."""
    image, hole = _batch(40, 44)
    other = torch.where(hole > 0.5, torch.rand_like(image), image)
    with torch.no_grad():
        assert torch.equal(cpu_gdn.generator(image, hole), cpu_gdn.generator(other, hole))
    x = GDNGenerator.prepare_input(image, hole)
    assert x.shape[1] == 4 and torch.equal(x[:, 3:], hole)
    assert torch.all(x[:, :3][(hole > 0.5).expand_as(image)] == 1)


def test_generator_uses_the_mask_channel(cpu_gdn):
    image, hole = _batch(32, 32, b=1)
    with torch.no_grad():
        assert not torch.allclose(cpu_gdn.generator(image, hole), cpu_gdn.generator(image, torch.zeros_like(hole)))


@pytest.mark.parametrize("dilation, second", [("code", 1), ("paper", 2)])
def test_dilation_option_sets_second_conv(dilation, second):
    gen = GDNGenerator(GDNConfig(base_channels=8, res_blocks=2, dilation=dilation))
    blocks = [m for m in gen.modules() if isinstance(m, GDNResidualBlock)]
    assert len(blocks) == 2
    for block in blocks:
        first, last = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
        assert first.dilation == (2, 2) and last.dilation == (second, second)
    out = gen(*_batch(20, 24, b=1))  # reflect padding matches the dilation: size is kept
    assert out.shape == (1, 3, 20, 24)


def test_bad_dilation_is_config_error():
    with pytest.raises(ConfigError, match="dilation"):
        from_dict(GDNConfig, {"dilation": "both"}, prefix="model")
