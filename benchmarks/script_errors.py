"""Shared exit-code convention of the benchmark scripts: a UserError is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def run_reporting_errors(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``; a :class:`~blindinpaint.errors.UserError` becomes ``error: ...`` and status 2."""
    from blindinpaint.errors import UserError

    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
