"""``blindinpaint train --config X.yaml key=value ...`` (also under ``torchrun``)."""

from __future__ import annotations

import argparse

from .config import load_experiment
from .trainer import train


def train_main(args: argparse.Namespace) -> int:
    """Runner of the ``train`` subcommand: load the config with overrides, then train.

    Exit status: 0 when ``train.steps`` were reached, 130 when stopped by Ctrl-C /
    SIGTERM after saving a checkpoint (continue with ``train.resume=latest``).
    """
    cfg = load_experiment(args.config, list(args.overrides or []))
    return train(cfg)
