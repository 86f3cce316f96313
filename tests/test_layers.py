"""Window attention, mask guidance (HCL Eq. 8-9), MAT mask update, seams, partial/gated convs."""

import torch
import torch.nn.functional as F

from blindinpaint.models.layers import (GatedConv2d, PartialConv2d, TransformerBlock, WindowAttention,
                                        shifted_window_regions, sn_conv2d, window_partition, window_reverse)


def _block(dim=16, heads=2, shift=False, seed=0, **kw):
    torch.manual_seed(seed)
    block = TransformerBlock(dim, heads, window=8, shift=shift, **kw).eval()
    with torch.no_grad():  # a visible relative bias, so it takes part in every check
        block.attn.relative_bias_table.normal_(0, 1)
    return block


def _window_ids(height, width, window=8):
    """Window index of every token of an unshifted partition, B x H x W (B = 1)."""
    rows = torch.arange(height)[:, None] // window
    cols = torch.arange(width)[None, :] // window
    return (rows * ((width + window - 1) // window) + cols)[None]


def test_partition_roundtrip():
    x = torch.randn(2, 16, 24, 5)
    w = window_partition(x, 8)
    assert w.shape == (2 * 2 * 3, 64, 5)
    assert torch.equal(window_reverse(w, 8, 16, 24), x)
    # first window = top-left 8x8 tile, row-major
    assert torch.equal(w[0].view(8, 8, 5), x[0, :8, :8])


def _hole_keys_do_not_matter(shift, height, width):
    torch.manual_seed(1)
    block = _block(shift=shift)
    x = torch.randn(2, height, width, 16)
    valid = (torch.rand(2, height, width) > 0.7).float()
    valid[1] = 0
    valid[1, :3, :5] = 1  # image 2: valid keys in one corner only -> many windows all-hole
    perturb = (valid == 0) & (torch.rand(2, height, width) > 0.5)  # change some hole tokens
    x2 = x + 10 * torch.randn_like(x) * perturb.unsqueeze(-1)
    with torch.no_grad():
        y1, upd1 = block(x, valid)
        y2, upd2 = block(x2, valid)
    assert torch.equal(upd1, upd2)
    # Unperturbed tokens that attended to at least one valid key = tokens valid after update.
    check = (upd1 > 0) & ~perturb
    assert check.sum() > 50
    diff = (y1 - y2).abs().amax(-1)[check]
    assert diff.max() < 1e-5, diff.max()
    # Sanity: the perturbation does reach tokens whose windows hold no valid key at all.
    blind = (upd1 == 0) & ~perturb
    assert blind.any() and (y1 - y2).abs().amax(-1)[blind].max() > 1e-3


def test_mask_guided_attention_ignores_hole_keys():
    _hole_keys_do_not_matter(shift=False, height=16, width=24)
    _hole_keys_do_not_matter(shift=True, height=16, width=24)
    _hole_keys_do_not_matter(shift=True, height=13, width=19)  # internal padding


def test_hole_bias_placement_option():
    after = WindowAttention(32, 2, 8, gamma=100.0)
    inside = WindowAttention(32, 2, 8, gamma=100.0, mask_bias="inside_scale")
    assert after.hole_bias_scale() == 100.0  # authors' code: -100 on the scaled logits
    assert abs(inside.hole_bias_scale() - 100.0 / 4.0) < 1e-9  # Eq. 8: (QK^T + M) / sqrt(16)


def test_mask_update_matches_mat_rule_unshifted():
    block = _block()
    valid = (torch.rand(3, 16, 24) > 0.97).float()
    with torch.no_grad():
        _, upd = block(torch.randn(3, 16, 24, 16), valid)
    # MAT: a window with >= 1 valid token becomes entirely valid, others stay hole.
    win = _window_ids(16, 24).expand(3, -1, -1)
    expected = torch.zeros_like(valid)
    for b in range(3):
        for wid in win[b].unique():
            sel = win[b] == wid
            expected[b][sel] = valid[b][sel].max()
    assert torch.equal(upd, expected)
    assert 0 < upd.mean() < 1


def test_mask_update_shifted_respects_seams():
    block = _block(shift=True)
    height, width, sh = 16, 24, 4
    valid = (torch.rand(2, height, width) > 0.97).float()
    with torch.no_grad():
        _, upd = block(torch.randn(2, height, width, 16), valid)
    # Reference: tokens attend to each other iff they share a window of the rolled map and
    # lie on the same side of each wrap-around seam.
    ii, jj = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ri, rj = (ii - sh) % height, (jj - sh) % width
    key = (ri // 8) * 100 + (rj // 8) + 1000 * (ii < sh) + 2000 * (jj < sh)
    expected = torch.zeros_like(valid)
    for b in range(2):
        for k in key.unique():
            sel = key == k
            expected[b][sel] = valid[b][sel].max()
    assert torch.equal(upd, expected)


def test_no_attention_across_shifted_seam():
    # 16x16 map, window 8, shift 4: original rows 0-3 share rolled windows with rows 12-15
    # (and columns likewise) but sit across the seam.  Changing rows 0-3 must leave rows
    # 4-15 untouched in a shifted block, while it does change rows 4-7 in a plain block.
    x = torch.randn(1, 16, 16, 16)
    x2 = x.clone()
    x2[:, :4] += 5 * torch.randn(1, 4, 16, 16)
    shifted, plain = _block(shift=True), _block(shift=False)
    with torch.no_grad():
        d_shift = (shifted(x)[0] - shifted(x2)[0]).abs()
        d_plain = (plain(x)[0] - plain(x2)[0]).abs()
    assert d_shift[:, 4:].max() < 1e-5
    assert d_shift[:, :4].max() > 1e-2
    assert d_plain[:, 4:8].max() > 1e-2


def test_seam_mask_is_zero_without_shift_axis():
    bias, same = shifted_window_regions(16, 16, 8, 4, 0, torch.device("cpu"))
    assert bias.shape == (4, 64, 64)
    # windows in the top row never straddle the (vertical-shift) seam
    assert torch.all(same[0] == 1) and torch.all(same[1] == 1)
    assert same[2].mean() < 1


def test_padding_never_valid_key():
    block = _block(shift=True)
    x = torch.randn(1, 13, 19, 16)
    valid = torch.ones(1, 13, 19)
    with torch.no_grad():
        y_internal, _ = block(x, valid)
        # Same map padded by hand to 16 x 24 with garbage, marked as not real.
        xp = torch.randn(1, 16, 24, 16) * 100
        xp[:, :13, :19] = x
        real = torch.zeros(1, 16, 24)
        real[:, :13, :19] = 1
        validp = F.pad(valid, (0, 5, 0, 3), value=1.0)  # claims valid: padding must still lose
        y_external, upd = block(xp, validp, real)
    assert torch.allclose(y_internal, y_external[:, :13, :19], atol=1e-5)
    # blind encoder path: padding excluded by `real` alone
    with torch.no_grad():
        y_blind, none = block(x)
        y_blind_ext, _ = block(xp, None, real)
    assert none is None
    assert torch.allclose(y_blind, y_blind_ext[:, :13, :19], atol=1e-5)


def test_block_gradients_flow_and_shapes():
    block = _block(shift=True).train()
    x = torch.randn(2, 10, 30, 16, requires_grad=True)
    y, upd = block(x, torch.ones(2, 10, 30))
    assert y.shape == x.shape and upd.shape == (2, 10, 30) and not upd.requires_grad
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and block.attn.relative_bias_table.grad.abs().sum() > 0


def test_partial_conv():
    torch.manual_seed(0)
    pconv = PartialConv2d(4, 6, 3)
    x = torch.randn(1, 4, 12, 12)
    valid = torch.ones(1, 1, 12, 12)
    valid[..., 3:9, 3:9] = 0
    out, new_valid = pconv(x, valid)
    # new mask: valid wherever any valid pixel lies under the 3x3 kernel
    assert torch.equal(new_valid, F.max_pool2d(valid, 3, 1, 1))
    assert out[..., 5:7, 5:7].abs().max() == 0  # fully-hole receptive fields give 0
    x2 = x + 100 * torch.randn_like(x) * (1 - valid)
    out2, _ = pconv(x2, valid)
    assert torch.allclose(out, out2, atol=1e-5)  # hole pixels never read
    # fully valid input: ordinary convolution
    full, _ = pconv(x, torch.ones_like(valid))
    ref = F.conv2d(x, pconv.weight, pconv.bias, padding=1)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(full[inner], ref[inner], atol=1e-5)


def test_gated_and_spectral_convs():
    g = GatedConv2d(4, 8, kernel=1, stride=2)
    assert g.gate.kernel_size == (3, 3)  # the gate is a 3x3 conv
    assert g(torch.randn(1, 4, 16, 16)).shape == (1, 8, 8, 8)
    sn = sn_conv2d(3, 16, 5, stride=2)
    assert sum(p.numel() for p in sn.parameters()) == 3 * 16 * 25 + 16
    sn.train()
    for _ in range(10):
        sn(torch.randn(1, 3, 16, 16))
    w = sn.weight.detach().flatten(1)
    assert abs(torch.linalg.matrix_norm(w, 2).item() - 1.0) < 0.05  # spectral norm ~ 1


# ------------------------------------------------------------------ fast paths (CPU performance)
def _compact_bias(batch=2, height=16, width=24, shift=4, heads_dim=(32, 2), seed=0):
    """A WindowAttention, windows and an AttentionBias with seams, hole and padding key biases."""
    from blindinpaint.models.layers import AttentionBias, shifted_window_seams

    torch.manual_seed(seed)
    dim, heads = heads_dim
    attn = WindowAttention(dim, heads, 8)
    with torch.no_grad():
        attn.relative_bias_table.normal_(0, 1)
    n_win = (height // 8) * (width // 8)
    _, _, seam_windows, seam_bias = shifted_window_seams(height, width, 8, shift, shift, torch.device("cpu"))
    key_bias = torch.zeros(batch * n_win, 64)
    key_bias[torch.rand(batch * n_win, 64) < 0.4] = -100.0  # hole keys
    key_bias[1] = -100.0  # a window whose keys are all holes
    key_bias[2, :5] = -1e4  # padding keys
    bias = AttentionBias(n_win, seam_windows=seam_windows, seam_bias=seam_bias, key_bias=key_bias, flush=True)
    windows = torch.randn(batch * n_win, 64, dim)
    return attn, windows, bias


def test_compact_mask_attention_matches_dense_sdpa():
    for heads_dim in ((32, 2), (16, 1)):
        attn, windows, bias = _compact_bias(heads_dim=heads_dim)
        assert 0 < bias.seam_windows.numel() < bias.windows
        grads = []
        for compact in (True, False):
            attn.zero_grad()
            x = windows.clone().requires_grad_()
            if compact:  # hand-written forward/backward on the packed qkv
                y = attn.attend(x, bias)
            else:  # reference: PyTorch's attention with the dense mask
                y = attn(x, bias.dense(attn.relative_bias(), 2))
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            grads.append((y.detach(), x.grad, attn.qkv.weight.grad, attn.relative_bias_table.grad))
        for got, ref in zip(*grads):
            assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5), float((got - ref).abs().max())
        with torch.no_grad():  # the no-gradient (fused kernel) path gives the same values
            assert torch.allclose(attn.attend(windows, bias), grads[1][0], atol=1e-5)


def test_seam_windows_compact_form_matches_dense_masks():
    from blindinpaint.models.layers import shifted_window_seams

    for shift_h, shift_w in ((4, 4), (4, 0), (0, 4)):
        bias, same = shifted_window_regions(16, 24, 8, shift_h, shift_w, torch.device("cpu"))
        ids, labels, seam_windows, seam_bias = shifted_window_seams(16, 24, 8, shift_h, shift_w, torch.device("cpu"))
        assert torch.equal(seam_bias[:, 0], bias[seam_windows])
        others = torch.ones(bias.shape[0], dtype=torch.bool)
        others[seam_windows] = False
        assert torch.all(bias[others] == 0)  # only the listed windows straddle a seam
        assert torch.equal((ids[:, :, None] == ids[:, None, :]).float(), same) and ids.max() < labels


def test_inference_runs_match_the_training_path(monkeypatch):
    import blindinpaint.models.layers as layers

    monkeypatch.setattr(layers, "_RUN_TOKENS", 128)  # 2 windows per run: many runs, seams inside runs
    for shift, guided in ((True, True), (False, True), (True, False)):
        block = _block(dim=32, heads=2, shift=shift, seed=3)
        x = torch.randn(2, 24, 32, 32)
        valid = None
        if guided:
            valid = (torch.rand(2, 24, 32) > 0.6).float()
            valid[0, :16, :16] = 0  # whole windows without a valid key
        with torch.no_grad():
            y_runs, upd_runs = block(x, valid)
        y_ref, upd_ref = block(x.clone().requires_grad_(), valid)  # autograd path (unfused attention)
        assert torch.allclose(y_runs, y_ref.detach(), atol=1e-5), float((y_runs - y_ref).abs().max())
        if guided:
            assert torch.equal(upd_runs, upd_ref)


def test_permute_tokens_and_linear_match_the_plain_ops():
    from blindinpaint.models.layers import linear, permute_tokens

    x = torch.randn(2, 12, 5, requires_grad=True)
    order = torch.randperm(12)
    inverse = torch.argsort(order)
    g = torch.randn(2, 12, 5)
    (gx,) = torch.autograd.grad(permute_tokens(x, order, inverse), x, g)
    (ref,) = torch.autograd.grad(x.index_select(1, order), x, g)
    assert torch.equal(gx, ref)
    layer = torch.nn.Linear(5, 7)
    y = linear(x, layer)
    assert y.shape == (2, 12, 7)
    got = torch.autograd.grad(y, [x, layer.weight, layer.bias], torch.ones_like(y))
    want = torch.autograd.grad(layer(x), [x, layer.weight, layer.bias], torch.ones_like(y))
    assert torch.allclose(y, layer(x), atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))


def test_index_caches_filled_under_inference_mode_still_serve_training():
    """Profiling or serving (inference mode) first, then a training step at the same size."""
    from blindinpaint.models.hcl import HCLNet
    from helpers import micro_hcl_config

    torch.manual_seed(0)
    net = HCLNet(micro_hcl_config())
    image = torch.rand(1, 3, 40, 44) * 2 - 1   # a size no other test uses: the caches start cold
    with torch.inference_mode():
        net.eval()(image)
    out = net.train()(image)
    out.rec.mean().backward()   # raised "Inference tensors cannot be saved for backward" before
    assert all(p.grad is not None for p in net.encoder.parameters())
