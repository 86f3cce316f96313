"""Building blocks of the HCL network: window attention, transformer blocks, gated/partial/SN convs.

Token maps inside the transformer are channels-last ``B x H x W x C``; convolutions take
``B x C x H x W``.  Two kinds of per-token masks flow through the blocks, both float {0, 1}:

* ``valid``: 1 = valid (uncorrupted) content, 0 = hole.  Only the mask-guided decoder uses
  it (HCL main Eq. 8-9, from MAT); the encoder is blind and passes ``None``.
* ``real``: 1 = a real image pixel, 0 = padding added to reach a multiple of the window.
  Padded tokens are never valid keys, in the encoder as well as in the decoder.

Performance notes (DESIGN.md "Performance targets"): attention runs through
``F.scaled_dot_product_attention`` with one additive float mask per block (relative-position
bias + shifted-window seam mask + hole/padding key bias); cyclic shift + window partition is
one cached ``index_select`` each way (no ``roll``, no permute copies); gather orders, seam masks
and relative-position indices are cached per (size, window, shift, device), so a new input size
never requires rebuilding the model.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Additive bias that removes a key from the softmax: exp(-1e4) == 0 in float32, yet finite,
# so a query whose keys are all removed (only possible for padded queries) gets no NaN.
_BLOCKED = -1e4


# ----------------------------------------------------------------------------- windows
def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``B x H x W x C`` (H, W multiples of ``window``) -> ``(B * nW) x window^2 x C``.

    Windows are ordered row-major over the grid, batch-major; one copy (the final reshape).
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b * (h // window) * (w // window), window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW) x window^2 x C`` -> ``B x H x W x C``."""
    c = windows.shape[-1]
    nh, nw = height // window, width // window
    x = windows.view(-1, nh, nw, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


@functools.lru_cache(maxsize=16)
def relative_position_index(window: int) -> torch.Tensor:
    """``window^2 x window^2`` long tensor indexing a ``(2w-1)^2`` bias table (Swin)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2 x N x N, each in [-(w-1), w-1]
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


@functools.lru_cache(maxsize=64)
def shifted_window_regions(height: int, width: int, window: int, shift_h: int, shift_w: int,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seam masks of shifted windows on an ``height x width`` map (multiples of ``window``).

    After the cyclic shift by ``(-shift_h, -shift_w)`` the last row/column of windows holds
    tokens from opposite image borders; those must not attend to each other (Swin).

    Returns:
        ``bias``: ``nW x N x N`` float, 0 where query and key lie in the same region,
        a large negative number across a seam.
        ``same``: ``nW x N x N`` float {0, 1}, 1 where attention is allowed (mask update).
    """
    region = torch.zeros(1, height, width, 1)
    label = 0
    h_slices = (slice(0, height - window), slice(height - window, height - shift_h), slice(height - shift_h, height))
    w_slices = (slice(0, width - window), slice(width - window, width - shift_w), slice(width - shift_w, width))
    if shift_h == 0:
        h_slices = (slice(0, height),)
    if shift_w == 0:
        w_slices = (slice(0, width),)
    for hs in h_slices:
        for ws in w_slices:
            region[:, hs, ws, :] = label
            label += 1
    ids = window_partition(region, window).squeeze(-1)  # nW x N
    same = (ids[:, :, None] == ids[:, None, :]).float()
    bias = (1.0 - same) * _BLOCKED
    return bias.to(device), same.to(device)


@functools.lru_cache(maxsize=64)
def window_gather_index(height: int, width: int, window: int, shift_h: int, shift_w: int,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions for cyclic shift + window partition of a ``height x width`` map.

    ``x.reshape(B, H*W, C).index_select(1, order)`` equals
    ``window_partition(torch.roll(x, (-shift_h, -shift_w), (1, 2)), window)`` (flattened), and
    ``inverse`` undoes it.  Cached per size, so each block does one gather copy each way.
    """
    pos = torch.arange(height * width).view(1, height, width, 1)
    if shift_h or shift_w:
        pos = torch.roll(pos, shifts=(-shift_h, -shift_w), dims=(1, 2))
    order = window_partition(pos, window).reshape(-1)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return order.to(device), inverse.to(device)


# --------------------------------------------------------------------------- attention
class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative-position bias and qkv bias (Swin / MAT).

    With a ``valid`` key mask it is MAT's multi-head contextual attention (HCL main Eq. 8-9):
    ``gamma * (M_key - 1)`` is added to the logits, key-wise, broadcast over heads and queries.
    ``mask_bias="after_scale"`` adds it to the already scaled logits (authors' code, default);
    ``"inside_scale"`` divides it by ``sqrt(d_k)`` with the logits as printed in Eq. 8 (SPEC s.0).
    """

    def __init__(self, dim: int, heads: int, window: int, gamma: float = 100.0,
                 mask_bias: str = "after_scale") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if mask_bias not in ("after_scale", "inside_scale"):
            raise ValueError(f"mask_bias must be 'after_scale' or 'inside_scale', got {mask_bias!r}")
        self.dim, self.heads, self.window = dim, heads, window
        self.head_dim = dim // heads
        self.gamma = gamma
        self.mask_bias = mask_bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_bias_table, std=0.02)

    def hole_bias_scale(self) -> float:
        """Magnitude of the per-hole-key logit penalty (gamma, or gamma/sqrt(d_k) as in Eq. 8)."""
        return self.gamma if self.mask_bias == "after_scale" else self.gamma / math.sqrt(self.head_dim)

    def relative_bias(self) -> torch.Tensor:
        """``heads x N x N`` relative-position bias of one window."""
        n = self.window * self.window
        index = relative_position_index(self.window).to(self.relative_bias_table.device)
        return self.relative_bias_table[index.view(-1)].view(n, n, self.heads).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``windows``: ``(B * nW) x N x C``; ``attn_mask``: additive, broadcastable to
        ``(B * nW) x heads x N x N`` (already holding the relative bias). Returns ``(B * nW) x N x C``."""
        bw, n, c = windows.shape
        qkv = self.qkv(windows).view(bw, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask.to(windows.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Two-layer MLP with GELU in between (HCL main Eq. 7), no dropout."""

    def __init__(self, dim: int, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-LN transformer block (HCL main Eq. 7) on shifted windows, optionally mask-guided.

    ``F' = MCA(LN(F), M) + F;  F_out = MLP(LN(F')) + F'``.  ``shift=True`` shifts windows by
    ``window // 2`` along every axis longer than the window (odd blocks of a stage).
    """

    def __init__(self, dim: int, heads: int, window: int = 8, shift: bool = False, mlp_ratio: float = 2.0,
                 gamma: float = 100.0, mask_bias: str = "after_scale") -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, gamma=gamma, mask_bias=mask_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def _shifts(self, height: int, width: int) -> tuple[int, int]:
        # No shift along an axis that a single window already covers (Swin/MAT).
        if not self.shift:
            return 0, 0
        half = self.window // 2
        return (half if height > self.window else 0), (half if width > self.window else 0)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None,
                real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            x: ``B x H x W x C`` tokens (any H, W: padded to the window internally).
            valid: ``B x H x W`` float {0,1}, 1 = valid content; ``None`` = blind (encoder).
            real: ``B x H x W`` float {0,1}, 1 = real pixel, 0 = padding; ``None`` = all real.

        Returns:
            ``(x, valid)``: updated tokens ``B x H x W x C`` and, if ``valid`` was given, the
            MAT-updated mask (no gradient): a token becomes valid when at least one key it
            attends to is valid (= "every token of a window with a valid key" of MAT; with
            shifted windows the seam regions count as separate windows).
        """
        b, height, width, c = x.shape
        ws = self.window
        pad_h, pad_w = (-height) % ws, (-width) % ws
        hp, wp = height + pad_h, width + pad_w
        shift_h, shift_w = self._shifts(height, width)
        n_win, n = (hp // ws) * (wp // ws), ws * ws

        h = self.norm1(x)
        if pad_h or pad_w:
            h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))
            if real is None:
                real = x.new_ones(b, height, width)
            real = F.pad(real, (0, pad_w, 0, pad_h))
            if valid is not None:
                valid = F.pad(valid, (0, pad_w, 0, pad_h))
        # Cyclic shift + window partition as one cached gather (one copy instead of two).
        order, inverse = window_gather_index(hp, wp, ws, shift_h, shift_w, x.device)
        windows = h.reshape(b, hp * wp, c).index_select(1, order).view(b * n_win, n, c)

        def to_windows(m: torch.Tensor) -> torch.Tensor:  # B x Hp x Wp -> (B nW) x N
            return m.reshape(b, hp * wp).index_select(1, order).view(b * n_win, n)

        # One additive mask per block: relative bias (+ seam) (+ key bias for holes/padding).
        mask = self.attn.relative_bias().unsqueeze(0)  # 1 x h x N x N
        same = None
        if shift_h or shift_w:
            seam, same = shifted_window_regions(hp, wp, ws, shift_h, shift_w, x.device)
            mask = mask + seam.unsqueeze(1)  # nW x h x N x N
        key_valid = None  # (B nW) x N, 1 = usable valid key (mask guidance)
        key_bias = None
        if real is not None:
            real_w = to_windows(real)
            key_bias = (1.0 - real_w) * _BLOCKED
        if valid is not None:
            key_valid = to_windows(valid)
            if real is not None:
                key_valid = key_valid * real_w
            hole = (key_valid - 1.0) * self.attn.hole_bias_scale()  # gamma (M - 1), Eq. 9
            key_bias = hole if key_bias is None else key_bias + hole
        heads = mask.shape[1]
        if key_bias is not None:
            mask = (mask.unsqueeze(0) + key_bias.view(b, -1, 1, 1, n)).view(b * n_win, heads, n, n)
        elif same is not None and b > 1:
            mask = mask.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * n_win, heads, n, n)

        out = self.attn(windows, mask).view(b, hp * wp, c).index_select(1, inverse).view(b, hp, wp, c)
        if pad_h or pad_w:
            out = out[:, :height, :width]
        x = x + out
        x = x + self.mlp(self.norm2(x))

        new_valid = None
        if key_valid is not None:
            with torch.no_grad():
                if same is None:  # plain windows: MAT's rule, whole window at once
                    upd = key_valid.amax(dim=1, keepdim=True).expand(-1, n)
                else:  # shifted windows: the keys each query can attend to
                    upd = (key_valid.view(b, n_win, 1, n) * same).amax(dim=-1)
                upd = upd.reshape(b, hp * wp).index_select(1, inverse).view(b, hp, wp)
                new_valid = upd[:, :height, :width].contiguous()
        return x, new_valid


# ------------------------------------------------------------------------- convolutions
class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., DeepFill v2): ``conv(x) * sigmoid(gate(x))``.

    The gate is a 3x3 conv by default (SPEC section 2), with the same stride and output
    channels as the feature conv; both keep the spatial size at stride 1.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, gate_kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2)
        self.gate = nn.Conv2d(in_ch, out_ch, gate_kernel, stride, padding=gate_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class PartialConv2d(nn.Conv2d):
    """Partial convolution (Liu et al. 2018) with mask update; single-channel mask.

    ``out = W^T (X * M) * (k^2 / sum(M)) + b`` where ``sum(M) > 0``, else 0.  The new mask is
    1 wherever any valid pixel lies under the kernel (SPEC section 2).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=True)
        self.register_buffer("_ones", torch.ones(1, 1, kernel, kernel), persistent=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: ``B x C x H x W``; ``valid``: ``B x 1 x H x W`` float {0,1}, 1 = valid.
        Returns ``(out B x C' x H' x W', new_valid B x 1 x H' x W')``."""
        with torch.no_grad():
            count = F.conv2d(valid, self._ones.to(valid.dtype), stride=self.stride, padding=self.padding)
            new_valid = (count > 0).to(x.dtype)
            ratio = self._ones.numel() / count.clamp(min=1.0) * new_valid
        out = F.conv2d(x * valid, self.weight, None, self.stride, self.padding)
        out = (out * ratio + self.bias.view(1, -1, 1, 1)) * new_valid
        return out, new_valid


def sn_conv2d(in_ch: int, out_ch: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    """Spectral-normalised conv (Miyato et al.) with "same"-style padding ``kernel // 2``."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=bias)
    return nn.utils.parametrizations.spectral_norm(conv)
