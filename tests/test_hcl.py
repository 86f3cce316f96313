"""HCL network: paper parameter counts, forward contracts at any size, mask routing, refiner isolation."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blindinpaint.config import to_dict
from blindinpaint.errors import ConfigError
from blindinpaint.models.contrast import ContrastConfig
from blindinpaint.models.hcl import HCLConfig, HCLNet, PatchDiscriminator, build_hcl
from blindinpaint.models.registry import build_model, load_model_config
from blindinpaint.profile import count_parameters

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# SPEC section 2, counted from the authors' implementation (stem included in the encoder).
SPEC_COUNTS = {
    32: {"encoder": 743_606, "heads": 65_136, "bottleneck": 414_344, "decoder": 2_348_465, "restoration": 3_571_551},
    64: {"encoder": 2_938_390, "heads": 115_360, "bottleneck": 1_646_088, "decoder": 9_363_217,
         "restoration": 14_063_055},
}


@pytest.mark.parametrize("dim", [32, 64])
def test_paper_parameter_counts(dim):
    params = count_parameters("hcl", HCLConfig(dim=dim))  # meta device: nothing allocated
    print(f"D={dim}:", params)
    spec = SPEC_COUNTS[dim]
    assert params["stem"] + params["encoder"] == spec["encoder"]
    assert params["heads"] == spec["heads"]
    assert params["bottleneck"] == spec["bottleneck"]
    assert params["decoder"] == spec["decoder"]
    assert params["restoration"] == spec["restoration"]
    assert abs(params["restoration"] - {32: 3.57e6, 64: 14.06e6}[dim]) / params["restoration"] < 0.02
    assert params["cluster_classifier"] == 4_225
    assert params["discriminator"] == 4_716_288
    assert abs(params["refiner"] - 61_564_995) / 61_564_995 < 1e-4  # ours: 61,565,251


def test_yaml_configs_match_paper_and_tiny_size():
    ffhq = load_model_config(CONFIGS / "hcl_ffhq256.yaml")
    assert ffhq.task == "hcl" and ffhq.config.dim == 32
    assert count_parameters("hcl", ffhq.config)["restoration"] == 3_571_551
    places = load_model_config(CONFIGS / "hcl_places256.yaml").config
    assert count_parameters("hcl", places)["restoration"] == 14_063_055
    p512 = load_model_config(CONFIGS / "hcl_places512.yaml").config
    assert p512.conv_stages == 1 and p512.dim == 64
    tiny = load_model_config(CONFIGS / "hcl_tiny.yaml").config
    counts = count_parameters("hcl", tiny)
    assert 0.65e6 < counts["restoration"] < 0.95e6  # "Ours-small": 808K
    assert tiny.contrast.stages == 3 and tiny.refiner_width > 0


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: hcl\nmodel:\n  dimm: 16\ntrain:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="model.dimm"):
        load_model_config(bad)
    with pytest.raises(ConfigError, match="decoder_depths"):
        HCLNet(HCLConfig(dim=8, decoder_depths=[2, 2]))
    with pytest.raises(ConfigError, match="contrast.stages"):
        HCLNet(HCLConfig(dim=8, encoder_depths=[1, 1], encoder_heads=[1, 2], decoder_depths=[1, 1]))
    no_task = tmp_path / "no_task.yaml"
    no_task.write_text("model:\n  dim: 16\n")
    with pytest.raises(ConfigError, match="task"):
        load_model_config(no_task)
    over = load_model_config(CONFIGS / "hcl_tiny.yaml", ["model.dim=8", "model.refiner_width=0"])
    assert over.config.dim == 8 and over.config.refiner_width == 0
    # exports store the config as a plain dict: builders accept it (and validate it)
    net = build_hcl(to_dict(over.config))
    assert net.refiner is None and net.cfg == over.config
    with pytest.raises(ConfigError, match="model.window"):
        build_hcl({"window": "eight"})


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_model(load_model_config(CONFIGS / "hcl_tiny.yaml")).eval()


@pytest.mark.parametrize("size", [(128, 128), (256, 256), (200, 333)])
def test_tiny_forward_any_size(tiny_net, size):
    h, w = size
    batch = 2 if h == 128 else 1
    image = torch.rand(batch, 3, h, w) * 2 - 1
    with torch.no_grad():
        out = tiny_net(image)  # one model, every size: nothing is rebuilt
    for t in (out.rec, out.refined):
        assert t.shape == (batch, 3, h, w) and torch.isfinite(t).all() and t.abs().max() <= 1
    assert out.hole.shape == out.prob_hole.shape == (batch, 1, h, w)
    assert set(out.hole.unique().tolist()) <= {0.0, 1.0}
    assert out.prob_hole.min() >= 0 and out.prob_hole.max() <= 1
    assert [tuple(m.shape[-2:]) for m in out.decoder_masks] == [(-(-h // f), -(-w // f)) for f in (4, 2, 1)]
    # the detector saw the coarse -> fine encoder scales of the padded image (multiple of 32)
    assert [tuple(x.shape[-2:]) for x in out.detection.hole] == [
        (-(-h // 32) * 32 // f, -(-w // 32) * 32 // f) for f in (4, 2, 1)]


def test_decoder_hole_is_max_pooled_per_scale(tiny_net):
    image = torch.rand(1, 3, 72, 100) * 2 - 1
    hole = torch.zeros(1, 1, 72, 100)
    hole[..., 10:30, 40:70] = 1
    hole[..., 61, 5] = 1  # a single hole pixel marks its coarse cells as hole
    with torch.no_grad():
        out = tiny_net(image, decoder_hole=hole, refine=False)
    assert out.refined is None
    assert torch.equal(out.hole, hole)
    with pytest.raises(ValueError, match="decoder_hole"):
        tiny_net(image, decoder_hole=hole[..., :64, :], refine=False)
    for m, f in zip(out.decoder_masks, (4, 2, 1)):
        expected = F.max_pool2d(F.pad(hole, (0, (-100) % f, 0, (-72) % f)), f)
        assert torch.equal(m, expected)
        assert m[0, 0, 61 // f, 5 // f] == 1


def test_decoder_uses_the_given_mask(tiny_net):
    # Mask guidance changes the decoder's output; the same mask gives the same output.
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    empty = torch.zeros(1, 1, 64, 64)
    hole = empty.clone()
    hole[..., 16:48, 16:48] = 1
    with torch.no_grad():
        a = tiny_net(image, decoder_hole=hole, refine=False).rec
        b = tiny_net(image, decoder_hole=hole, refine=False).rec
        c = tiny_net(image, decoder_hole=empty, refine=False).rec
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_refiner_gets_no_gradient_path_into_restoration():
    torch.manual_seed(0)
    cfg = HCLConfig(dim=8, encoder_depths=[1, 1, 1], decoder_depths=[1, 1, 1], bottleneck_depth=1,
                    refiner_width=4, contrast=ContrastConfig(hidden_dim=16, embed_dim=8))
    net = HCLNet(cfg).train()
    out = net(torch.rand(1, 3, 64, 64) * 2 - 1, decoder_hole=torch.zeros(1, 1, 64, 64))
    out.refined.mean().backward()
    assert all(p.grad is None for p in net.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.refiner.parameters())
    out.rec.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())


def test_conv_stage_and_fewer_detected_scales():
    # places512-like layout (one conv stage) with 2 detection stages: the finest decoder scale
    # reuses the finest detected mask, upsampled.
    torch.manual_seed(0)
    cfg = HCLConfig(dim=8, conv_stages=1, encoder_depths=[1, 1, 1], decoder_depths=[1, 1, 1],
                    bottleneck_depth=1, refiner_width=4,
                    contrast=ContrastConfig(stages=2, hidden_dim=16, embed_dim=8))
    net = HCLNet(cfg).eval()
    assert cfg.multiple() == 64
    with torch.no_grad():
        out = net(torch.rand(1, 3, 70, 90) * 2 - 1)
    assert out.rec.shape == out.refined.shape == (1, 3, 70, 90)
    assert len(out.detection.hole) == 2 and len(out.decoder_masks) == 3
    assert [tuple(m.shape[-2:]) for m in out.decoder_masks] == [(9, 12), (18, 23), (35, 45)]
    assert torch.equal(out.decoder_masks[2], F.interpolate(out.detection.hole[1], scale_factor=2)[..., :35, :45])
    assert out.hole.shape == (1, 1, 70, 90)


def test_paper_config_forward_128():
    torch.manual_seed(0)
    net = HCLNet(HCLConfig(dim=32)).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 128, 128) * 2 - 1)
    assert out.rec.shape == out.refined.shape == (1, 3, 128, 128)
    assert torch.isfinite(out.refined).all()


def test_discriminator_critic_per_image():
    disc = PatchDiscriminator()
    value = disc(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert value.shape == (3,)
    single = disc(torch.rand(1, 3, 64, 64))
    assert single.shape == (1,) and torch.isfinite(single).all()
