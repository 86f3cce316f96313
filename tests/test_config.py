from dataclasses import dataclass, field
from typing import Optional

import pytest

from blindinpaint.cli import main
from blindinpaint.config import ConfigError, load_config, parse_overrides, save_config


@dataclass
class Inner:
    dim: int = 32
    depths: list[int] = field(default_factory=lambda: [6, 4, 2])
    lr: float = 1e-3


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    resume: Optional[str] = None


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  dim: 16\n  lr: 1\n")
    cfg = load_config(Outer, path, ["inner.dim=8", "inner.depths=1,2", "resume=latest"])
    assert cfg.name == "a" and cfg.inner.dim == 8 and cfg.inner.depths == [1, 2]
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.resume == "latest"


def test_unknown_key_names_dotted_path():
    with pytest.raises(ConfigError, match="inner.dimm"):
        load_config(Outer, None, ["inner.dimm=3"])


def test_wrong_type_is_error():
    with pytest.raises(ConfigError, match="inner.dim.*integer"):
        load_config(Outer, None, ["inner.dim=abc"])


def test_roundtrip(tmp_path):
    cfg = load_config(Outer, None, ["inner.dim=7"])
    save_config(cfg, tmp_path / "r.yaml")
    assert load_config(Outer, tmp_path / "r.yaml") == cfg


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


def test_cli_user_error_is_one_line(capsys):
    status = main(["train", "--config", "does/not/exist.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "config file not found" in err[0]
