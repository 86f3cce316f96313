"""Profiler and ``blindinpaint info``: JSON contract, MAC counting of fused attention, errors."""

import json
from pathlib import Path

import torch

from blindinpaint.cli import main
from blindinpaint.models.layers import WindowAttention
from blindinpaint.profile import count_macs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_info_json_contract(capsys):
    status = main(["info", str(CONFIGS / "hcl_tiny.yaml"), "--size", "32", "--repeats", "1", "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object
    for key in ("params", "macs", "latency_ms", "peak_mem_mb"):
        assert key in result
    p = result["params"]
    assert p["restoration"] == p["stem"] + p["encoder"] + p["heads"] + p["bottleneck"] + p["decoder"]
    assert p["total"] == sum(v for k, v in p.items() if k not in ("restoration", "total"))
    assert result["macs"] > 0 and result["latency_ms"] > 0 and result["peak_mem_mb"] > 0
    assert "FlopCounterMode" in result["mac_counter"] and result["threads"] >= 1
    # per-module MACs add up to the total (every MAC happens inside some top-level module)
    assert sum(result["macs_per_module"].values()) == result["macs"]


def test_info_text_without_latency(capsys):
    assert main(["info", str(CONFIGS / "hcl_tiny.yaml"), "--size", "32", "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "restoration" in out and "FlopCounterMode" in out and "latency" not in out
    full_macs = int(float(out.split("MACs: ")[1].split(" G")[0]) * 1e9)
    assert main(["info", str(CONFIGS / "hcl_tiny.yaml"), "--size", "32", "--no-latency", "--no-refiner"]) == 0
    out = capsys.readouterr().out
    assert "without the refiner" in out and "\n  refiner " in out  # params still list the refiner
    bare_macs = int(float(out.split("MACs: ")[1].split(" G")[0]) * 1e9)
    assert bare_macs < full_macs


def test_macs_include_fused_attention():
    dim, heads, n, windows = 32, 2, 64, 3
    attn = WindowAttention(dim, heads, 8)
    x = torch.randn(windows, n, dim)
    mask = torch.zeros(1, heads, n, n)
    macs, _ = count_macs(attn, lambda: attn(x, mask))
    linear = windows * n * (dim * 3 * dim + dim * dim)
    attention = 2 * windows * heads * n * n * (dim // heads)  # QK^T and AV
    assert macs == linear + attention


def test_info_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["info", "no-such-model-name", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blindinpaint: error:") and "\n" not in err
    assert main(["info", str(CONFIGS / "hcl_tiny.yaml"), "--size", "2"]) == 2
