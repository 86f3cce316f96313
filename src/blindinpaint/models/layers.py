"""Building blocks of the HCL network: window attention, transformer blocks, gated/partial/SN convs.

Token maps inside the transformer are channels-last ``B x H x W x C``; convolutions take
``B x C x H x W``.  Two kinds of per-token masks flow through the blocks, both float {0, 1}:

* ``valid``: 1 = valid (uncorrupted) content, 0 = hole.  Only the mask-guided decoder uses
  it (HCL main Eq. 8-9, from MAT); the encoder is blind and passes ``None``.
* ``real``: 1 = a real image pixel, 0 = padding added to reach a multiple of the window.
  Padded tokens are never valid keys, in the encoder as well as in the decoder.

Performance notes (DESIGN.md "Performance targets"; CPU):

* The additive logit mask is never materialised per window in training: relative-position bias
  (``heads x N x N``), the seam mask of the few shifted windows that straddle a seam
  (:func:`shifted_window_seams`) and one key bias per window (holes, padding) are added to the
  logits in place (:class:`AttentionBias`), inside a hand-written attention autograd function.
* Mask-guided blocks: the hole bias ``-gamma`` makes hole keys' probabilities float32 subnormals,
  which slow the softmax and every product they enter several-fold on x86; they are flushed or
  blocked where that changes nothing representable (``_FLUSH_BELOW``,
  ``TransformerBlock._block_hole_keys``).
* Without gradients the fused ``scaled_dot_product_attention`` kernel runs on runs of
  ``_RUN_TOKENS`` tokens (``TransformerBlock._forward_runs``): small buffers that stay in cache and
  in the allocator's free lists instead of ~100 MB page-faulted buffers per op at 512 px.
* Cyclic shift + window partition is one cached ``index_select`` each way (no ``roll``, no permute
  copies; the backward is the inverse gather); gather orders, seam masks and relative-position
  indices are cached per (size, window, shift, device), so a new input size never requires
  rebuilding the model.  Linear layers run as ``mm`` + in-place bias (:func:`linear`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

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


def _tensor_cache(maxsize: int):
    """``functools.lru_cache`` for index / mask tensors, built outside inference mode: a cache filled
    under ``torch.inference_mode`` (profiling, serving) must still serve a later training step."""
    def wrap(fn):
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args, **kwargs):
            with torch.inference_mode(False):
                return fn(*args, **kwargs)
        return cached
    return wrap


@_tensor_cache(16)
def relative_position_index(window: int) -> torch.Tensor:
    """``window^2 x window^2`` long tensor indexing a ``(2w-1)^2`` bias table (Swin)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2 x N x N, each in [-(w-1), w-1]
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def _region_ids(height: int, width: int, window: int, shift_h: int, shift_w: int) -> tuple[torch.Tensor, int]:
    """``nW x N`` long region label of every token of the shifted window partition, and the number
    of labels.  After the cyclic shift by ``(-shift_h, -shift_w)`` the last row/column of windows
    holds tokens from opposite image borders (different labels); those must not attend to each
    other (Swin)."""
    region = torch.zeros(1, height, width, 1, dtype=torch.long)
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
    return window_partition(region, window).squeeze(-1), label


@_tensor_cache(64)
def shifted_window_regions(height: int, width: int, window: int, shift_h: int, shift_w: int,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seam masks of shifted windows on an ``height x width`` map (multiples of ``window``), dense.

    Returns:
        ``bias``: ``nW x N x N`` float, 0 where query and key lie in the same region,
        a large negative number across a seam.
        ``same``: ``nW x N x N`` float {0, 1}, 1 where attention is allowed (mask update).

    The blocks use the compact :func:`shifted_window_seams` (same values, only seam windows).
    """
    ids, _ = _region_ids(height, width, window, shift_h, shift_w)  # nW x N
    same = (ids[:, :, None] == ids[:, None, :]).float()
    bias = (1.0 - same) * _BLOCKED
    return bias.to(device), same.to(device)


@_tensor_cache(64)
def shifted_window_seams(height: int, width: int, window: int, shift_h: int, shift_w: int,
                         device: torch.device) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """Compact form of :func:`shifted_window_regions` for the blocks (cached per size and device).

    Only the windows on the last row / column of the shifted grid straddle a seam, so instead of a
    dense ``nW x N x N`` mask this returns:

    * ``ids``: ``nW x N`` long region label of every token of every window,
    * ``labels``: the number of distinct labels,
    * ``seam_windows``: ``K`` long indices of the windows holding more than one region,
    * ``seam_bias``: ``K x 1 x N x N`` float additive mask of those windows (``_BLOCKED`` across a
      seam, 0 within a region): the rows ``seam_windows`` of ``shifted_window_regions``' bias.
    """
    ids, labels = _region_ids(height, width, window, shift_h, shift_w)
    seam_windows = torch.nonzero((ids != ids[:, :1]).any(dim=1)).squeeze(1)
    sub = ids[seam_windows]
    bias = (sub[:, :, None] != sub[:, None, :]).float() * _BLOCKED
    return ids.to(device), labels, seam_windows.to(device), bias.unsqueeze(1).to(device)


@_tensor_cache(64)
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


class _PermuteTokens(torch.autograd.Function):
    """``x.index_select(1, order)`` for a permutation ``order`` whose inverse is known.

    The backward is the inverse gather (``index_select`` backward would zero-fill a buffer and
    scatter-add into it); a permutation moves every gradient value exactly once, so both agree.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def permute_tokens(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``B x L x ...`` -> the same tokens in the order ``order`` (``inverse`` = its inverse permutation)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _PermuteTokens.apply(x, order, inverse)
    return x.index_select(1, order)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` for ``... x in`` tokens as one ``mm`` plus an in-place bias add.

    Same maths as ``F.linear``; on CPU its ``addmm`` first broadcast-copies the bias into the output
    and then accumulates the product onto it, which is 10-25 % slower for these long, thin matrices
    (forward and backward).  Gradients are the same ops as ``F.linear``'s.
    """
    out = torch.mm(x.reshape(-1, x.shape[-1]), layer.weight.t())
    if layer.bias is not None:
        out = out.add_(layer.bias)
    return out.view(*x.shape[:-1], out.shape[-1])


# --------------------------------------------------------------------------- attention
# Probabilities below this are set to exactly 0 after the softmax (mask-guided blocks only).  A hole
# key's logit sits gamma = 100 below the valid keys', so its probability is about exp(-100): a float32
# *subnormal*, and every product with a subnormal operand takes a slow microcode path on x86 CPUs
# (it made the mask-guided blocks several times slower than the blind ones).  Every row holds a
# probability >= 1/N, so dropping weights below 2^-64 changes no sum over a row by more than float32
# rounding of that sum already does.
_FLUSH_BELOW = 2.0 ** -64

# Tokens per run of windows in the no-gradient block path (TransformerBlock._forward_runs).
_RUN_TOKENS = 16384


@dataclass(frozen=True)
class AttentionBias:
    """The additive logit mask of one block, in compact form (no ``(B nW) x heads x N x N`` tensor).

    Logits of window ``w`` (image ``w // windows``), head ``h``, query ``i``, key ``j``, with the
    block's ``heads x N x N`` relative-position bias ``rel`` (the only part with a gradient)::

        q.k * scale + rel[h, i, j] (+ seam_bias[s, 0, i, j] if w % windows == seam_windows[s])
                    (+ key_bias[w, j])

    windows:      windows per image (nW)
    seam_windows: ``K`` long, windows (within an image) that straddle a shifted-window seam, or None
    seam_bias:    ``K x 1 x N x N`` their seam mask (``_BLOCKED`` across a seam), or None
    key_bias:     ``(B nW) x N`` per-key bias (padding ``_BLOCKED``, holes ``-gamma``), or None
    flush:        set probabilities below ``_FLUSH_BELOW`` to 0 (mask guidance: see above)
    """

    windows: int
    seam_windows: torch.Tensor | None = None
    seam_bias: torch.Tensor | None = None
    key_bias: torch.Tensor | None = None
    flush: bool = False

    def dense(self, rel: torch.Tensor, batch: int) -> torch.Tensor:
        """The same mask as one dense ``(B nW) x heads x N x N`` tensor (reference / fallback path)."""
        heads, n, _ = rel.shape
        mask = rel.unsqueeze(0).expand(batch * self.windows, -1, -1, -1).clone()
        if self.seam_windows is not None and self.seam_windows.numel():
            m5 = mask.view(batch, self.windows, heads, n, n)
            seam = self.seam_bias.to(mask.dtype).unsqueeze(0).expand(batch, -1, heads, -1, -1)
            m5.index_add_(1, self.seam_windows, seam)
        if self.key_bias is not None:
            mask = mask + self.key_bias.view(-1, 1, 1, n).to(mask.dtype)
        return mask


def _attention_probs(q: torch.Tensor, k: torch.Tensor, rel: torch.Tensor, bias: AttentionBias,
                     scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` for ``(B nW heads) x N x hd`` q, k -> ``(B nW heads) x N x N``."""
    bwh, n, _ = q.shape
    heads = rel.shape[0]
    bw = bwh // heads
    s = torch.empty(bwh, n, n, dtype=q.dtype, device=q.device)
    torch.baddbmm(s, q, k.transpose(1, 2), beta=0.0, alpha=scale, out=s)
    s.view(bw, heads, n, n).add_(rel.to(s.dtype))
    if bias.seam_windows is not None and bias.seam_windows.numel():
        s5 = s.view(bw // bias.windows, bias.windows, heads, n, n)
        seam = bias.seam_bias.to(s.dtype).unsqueeze(0).expand(s5.shape[0], -1, heads, -1, -1)
        s5.index_add_(1, bias.seam_windows, seam)
    if bias.key_bias is not None:
        s.view(bw, heads, n, n).add_(bias.key_bias.view(bw, 1, 1, n).to(s.dtype))
    p = torch.softmax(s, dim=-1)
    if bias.flush:
        torch.threshold_(p, _FLUSH_BELOW, 0.0)
    return p


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``bw x N x (heads hd)`` (any strides with a unit last stride) -> ``(bw heads) x N x hd``;
    a view for one head."""
    bw, n, c = t.shape
    if heads == 1:
        return t
    return t.reshape(bw, n, heads, c // heads).transpose(1, 2).reshape(bw * heads, n, c // heads)


def _merge_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of :func:`_split_heads`: ``(bw heads) x N x hd`` -> ``bw x N x (heads hd)``."""
    bwh, n, hd = t.shape
    if heads == 1:
        return t
    return t.view(bwh // heads, heads, n, hd).transpose(1, 2).reshape(bwh // heads, n, heads * hd)


class _WindowAttentionFunction(torch.autograd.Function):
    """Window attention on the packed ``qkv`` projection with a hand-written backward (CPU training).

    Saves q, k, v (views of ``qkv`` for one head) and the probabilities, returns the gradient of
    ``qkv`` in one tensor and the relative-position bias gradient summed over windows; the seam and
    key biases are constants.  Same maths as ``scaled_dot_product_attention`` with the dense mask,
    whose CPU kernels fall back to the unfused maths with many more full-size temporaries when the
    mask needs a gradient (``select`` backwards zero-filling ``qkv``-sized buffers, mask expansion
    and its reduction, a NaN-guarded softmax).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, rel: torch.Tensor, bias: AttentionBias, scale: float) -> torch.Tensor:
        c = qkv.shape[-1] // 3
        heads = rel.shape[0]
        q, k, v = (_split_heads(qkv[..., i * c:(i + 1) * c], heads) for i in range(3))
        p = _attention_probs(q, k, rel, bias, scale)
        ctx.save_for_backward(q, k, v, p)
        ctx.heads, ctx.scale, ctx.rel_shape = heads, scale, rel.shape
        return _merge_heads(torch.bmm(p, v), heads)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, p = ctx.saved_tensors
        heads, scale = ctx.heads, ctx.scale
        bw, n, c = grad_out.shape
        do = _split_heads(grad_out.contiguous(), heads)
        dv = torch.bmm(p.transpose(1, 2), do)
        ds = torch._softmax_backward_data(torch.bmm(do, v.transpose(1, 2)), p, -1, p.dtype)
        d_rel = None
        if ctx.needs_input_grad[1]:
            d_rel = ds.view(bw, heads * n * n).sum(0).view(ctx.rel_shape)
        dq = torch.bmm(ds, k).mul_(scale)
        dk = torch.bmm(ds.transpose(1, 2), q).mul_(scale)
        d_qkv = torch.empty(bw, n, 3 * c, dtype=grad_out.dtype, device=grad_out.device)
        for i, g in enumerate((dq, dk, dv)):
            d_qkv[..., i * c:(i + 1) * c].copy_(_merge_heads(g, heads) if heads > 1 else g)
        return d_qkv, d_rel, None, None


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
        qkv = linear(windows, self.qkv).view(bw, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask.to(windows.dtype))
        return linear(out.transpose(1, 2).reshape(bw, n, c), self.proj)

    def attend(self, windows: torch.Tensor, bias: AttentionBias) -> torch.Tensor:
        """Same as :meth:`forward` with the mask in compact form (plus this module's relative bias):
        ``(B * nW) x N x C`` -> ``(B * nW) x N x C``."""
        qkv = linear(windows, self.qkv)
        rel = self.relative_bias()
        scale = 1.0 / math.sqrt(self.head_dim)
        if not (torch.is_grad_enabled() and (qkv.requires_grad or rel.requires_grad)):
            out = self._attend_fused(qkv, rel, bias)
        elif qkv.device.type == "cpu":
            out = _WindowAttentionFunction.apply(qkv, rel, bias, scale)
        else:  # other devices: PyTorch's attention with the dense mask
            bw, n, _ = qkv.shape
            t = qkv.view(bw, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            mask = bias.dense(rel, bw // bias.windows).to(qkv.dtype)
            out = F.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=mask)
            out = out.transpose(1, 2).reshape(bw, n, self.dim)
        return linear(out, self.proj)

    def _attend_fused(self, qkv: torch.Tensor, rel: torch.Tensor, bias: AttentionBias) -> torch.Tensor:
        """No-gradient path: PyTorch's fused kernel (about 3x faster than the unfused maths here)."""
        seam_idx = seam_rows = None
        if bias.seam_windows is not None and bias.seam_windows.numel():
            images = qkv.shape[0] // bias.windows
            seam_idx = (torch.arange(images, device=qkv.device).unsqueeze(1) * bias.windows
                        + bias.seam_windows.unsqueeze(0)).reshape(-1)  # image-major, like the windows
            seam_rows = bias.seam_bias.repeat(images, 1, 1, 1)
        return self._fused(qkv, rel, bias.key_bias, seam_idx, seam_rows)

    def _fused(self, qkv: torch.Tensor, rel: torch.Tensor, key_bias: torch.Tensor | None,
               seam_idx: torch.Tensor | None, seam_rows: torch.Tensor | None) -> torch.Tensor:
        """Fused attention of ``bw`` windows: ``qkv`` ``bw x N x 3C`` -> ``bw x N x C`` (before ``proj``).

        The kernel's mask is ``rel`` broadcast over windows, plus ``key_bias`` (``bw x N``) when given
        (one dense tensor); windows ``seam_idx`` are computed again with their seam masks
        ``seam_rows`` (``K x 1 x N x N``) added and written over."""
        bw, n, _ = qkv.shape
        t = qkv.view(bw, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = rel.unsqueeze(0).to(qkv.dtype)  # 1 x heads x N x N
        if key_bias is not None:
            mask = mask + key_bias.view(bw, 1, 1, n).to(qkv.dtype)
        out = F.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=mask)  # bw x heads x N x hd
        if seam_idx is not None and seam_idx.numel():
            sub_mask = (mask if mask.shape[0] == 1 else mask[seam_idx]) + seam_rows.to(qkv.dtype)
            sub = F.scaled_dot_product_attention(t[0][seam_idx], t[1][seam_idx], t[2][seam_idx], attn_mask=sub_mask)
            out.index_copy_(0, seam_idx, sub)
        return out.transpose(1, 2).reshape(bw, n, self.dim)

    def attend_windows(self, windows: torch.Tensor, rel: torch.Tensor, key_bias: torch.Tensor | None,
                       seam_idx: torch.Tensor | None, seam_rows: torch.Tensor | None) -> torch.Tensor:
        """No-gradient attention of a run of windows with explicit mask parts (see :meth:`_fused`):
        ``bw x N x C`` -> ``bw x N x C``."""
        return linear(self._fused(linear(windows, self.qkv), rel, key_bias, seam_idx, seam_rows), self.proj)


class Mlp(nn.Module):
    """Two-layer MLP with GELU in between (HCL main Eq. 7), no dropout."""

    def __init__(self, dim: int, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = linear(x, self.fc1)
        # inference: GELU in place (one fresh buffer less; autograd needs the input kept)
        h = F.gelu(h) if torch.is_grad_enabled() and h.requires_grad else torch.ops.aten.gelu_(h)
        return linear(h, self.fc2)


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

    @staticmethod
    def _block_hole_keys(hole: torch.Tensor, key_valid: torch.Tensor, seams: tuple | None, b: int,
                         n_win: int) -> torch.Tensor:
        """Hole-key bias ``-gamma`` -> ``_BLOCKED`` in the windows where every query sees a valid key.

        There a hole key's probability is ``exp(-gamma + d)`` with ``d`` = its logit minus the row's
        largest valid one: below the ``_FLUSH_BELOW`` (2^-64) flush for any ``d < 55`` and below
        float32 resolution of the row for ``d < 88``, so blocking it changes nothing representable,
        while ``exp(-100)`` is a subnormal that slows the softmax itself down ~7x.  Windows without a
        valid key keep ``-gamma`` (the softmax then runs over the hole keys, shifted alike), and so do
        the seam windows, whose regions can differ in that respect.  ``hole``, ``key_valid``: ``(B nW) x N``.
        """
        usable = key_valid.amax(dim=1) > 0  # (B nW): some valid key in the window
        if seams is not None and seams[2].numel():
            plain = torch.ones(n_win, dtype=torch.bool, device=hole.device)
            plain[seams[2]] = False
            usable = usable & plain.repeat(b)
        return torch.where(usable.unsqueeze(1) & (key_valid == 0), torch.full_like(hole, _BLOCKED), hole)

    def _forward_runs(self, windows: torch.Tensor, bias: AttentionBias) -> torch.Tensor:
        """Inference: the block (LN, attention, residual, LN, MLP, residual) on runs of whole windows.

        Every step but the attention acts on each token alone and the attention on each window alone,
        so runs of ``_RUN_TOKENS`` tokens give the same values as the whole map at once, with buffers
        small enough to stay in cache and in the allocator's free lists (a 512 px map otherwise
        allocates, page-faults and frees a fresh ~100 MB buffer at every step).
        ``windows``: ``(B nW) x N x C`` tokens in window order -> the block output, same order.
        """
        total, n, _ = windows.shape
        per = max(1, _RUN_TOKENS // n)
        out = torch.empty_like(windows)
        rel = self.attn.relative_bias()
        seam_row = None
        if bias.seam_windows is not None and bias.seam_windows.numel():
            # seam window (within its image) -> its row of seam_bias; -1 elsewhere
            seam_row = torch.full((bias.windows,), -1, dtype=torch.long, device=windows.device)
            seam_row[bias.seam_windows] = torch.arange(bias.seam_windows.numel(), device=windows.device)
        for w0 in range(0, total, per):
            w1 = min(total, w0 + per)
            xc = windows[w0:w1]
            seam_idx = seam_rows = None
            if seam_row is not None:
                r = seam_row[torch.arange(w0, w1, device=windows.device) % bias.windows]
                seam_idx = torch.nonzero(r >= 0).squeeze(1)
                seam_rows = bias.seam_bias[r[seam_idx]]
            key_bias = None if bias.key_bias is None else bias.key_bias[w0:w1]
            y = self.attn.attend_windows(self.norm1(xc), rel, key_bias, seam_idx, seam_rows).add_(xc)
            torch.add(y, self.mlp(self.norm2(y)), out=out[w0:w1])
        return out

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

        # Inference on a window-aligned map runs the whole block over runs of windows (below).
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        chunked = not (pad_h or pad_w or needs_grad) and x.device.type == "cpu"
        h = x if chunked else self.norm1(x)  # chunked: LayerNorm per run of windows
        if pad_h or pad_w:
            h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))
            if real is None:
                real = x.new_ones(b, height, width)
            real = F.pad(real, (0, pad_w, 0, pad_h))
            if valid is not None:
                valid = F.pad(valid, (0, pad_w, 0, pad_h))
        # Cyclic shift + window partition as one cached gather (one copy instead of two).
        order, inverse = window_gather_index(hp, wp, ws, shift_h, shift_w, x.device)
        windows = permute_tokens(h.reshape(b, hp * wp, c), order, inverse).view(b * n_win, n, c)

        def to_windows(m: torch.Tensor) -> torch.Tensor:  # B x Hp x Wp -> (B nW) x N
            return m.reshape(b, hp * wp).index_select(1, order).view(b * n_win, n)

        # The additive mask in compact form: relative bias (inside the attention) + seam mask of the
        # seam windows only + one key bias per window for holes / padding (no dense mask tensor).
        seams = None
        bias = AttentionBias(n_win)
        if shift_h or shift_w:
            seams = shifted_window_seams(hp, wp, ws, shift_h, shift_w, x.device)
            bias = AttentionBias(n_win, seam_windows=seams[2], seam_bias=seams[3])
        key_valid = None  # (B nW) x N, 1 = usable valid key (mask guidance)
        key_bias = None
        unfused = needs_grad and x.device.type == "cpu"  # attend()'s unfused path (_block_hole_keys)
        with torch.no_grad():
            if real is not None:
                real_w = to_windows(real)
                key_bias = (1.0 - real_w) * _BLOCKED
            if valid is not None:
                key_valid = to_windows(valid)
                if real is not None:
                    key_valid = key_valid * real_w
                hole = (key_valid - 1.0) * self.attn.hole_bias_scale()  # gamma (M - 1), Eq. 9
                if unfused:  # (the fused kernel shows no subnormal slowdown)
                    hole = self._block_hole_keys(hole, key_valid, seams, b, n_win)
                key_bias = hole if key_bias is None else key_bias + hole
        if key_bias is not None:
            bias = dataclasses.replace(bias, key_bias=key_bias, flush=valid is not None)

        if chunked:
            out = self._forward_runs(windows, bias)
            x = out.view(b, hp * wp, c).index_select(1, inverse).view(b, hp, wp, c)
        else:
            out = permute_tokens(self.attn.attend(windows, bias).view(b, hp * wp, c), inverse, order)
            out = out.view(b, hp, wp, c)
            if pad_h or pad_w:
                out = out[:, :height, :width]
            x = x + out
            x = x + self.mlp(self.norm2(x))

        new_valid = None
        if key_valid is not None:
            with torch.no_grad():
                if seams is None:  # plain windows: MAT's rule, whole window at once
                    upd = key_valid.amax(dim=1, keepdim=True).expand(-1, n)
                else:  # shifted windows: max over the keys of the query's own seam region
                    ids, labels = seams[0], seams[1]
                    seg = (torch.arange(b * n_win, device=x.device) * labels).view(b, n_win, 1) + ids
                    seg = seg.reshape(-1)
                    best = key_valid.new_zeros(b * n_win * labels)
                    best.scatter_reduce_(0, seg, key_valid.reshape(-1), reduce="amax", include_self=True)
                    upd = best[seg].view(b * n_win, n)
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
