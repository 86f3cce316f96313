"""Helpers shared by the benchmark scripts: a marked section of a markdown doc, and the machine.

A benchmark writes its report between two HTML comments, so re-running it replaces its own
section and leaves the rest of the doc (hand-written text, other benchmarks' sections) alone::

    <!-- bench_configs -->
    ...generated...
    <!-- /bench_configs -->
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The opening and closing comment of section ``name``."""
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` replaced by ``body`` (appended at the end when absent).

    Raises:
        ValueError: the markers are unbalanced (one without the other, or in the wrong order,
            or more than one section of that name), so nothing is silently overwritten.
    """
    start, end = markers(name)
    n_start, n_end = text.count(start), text.count(end)
    block = f"{start}\n{body.strip()}\n{end}"
    if n_start == 0 and n_end == 0:
        if not text or text.endswith("\n\n"):
            sep = ""
        else:
            sep = "\n" if text.endswith("\n") else "\n\n"
        return f"{text}{sep}{block}\n"
    if n_start != 1 or n_end != 1:
        raise ValueError(f"expected exactly one '{start}' and one '{end}', found {n_start} and {n_end}")
    i, j = text.index(start), text.index(end)
    if j < i:
        raise ValueError(f"'{end}' comes before '{start}'")
    return text[:i] + block + text[j + len(end):]


def write_section(path: str | os.PathLike, name: str, body: str) -> Path:
    """Replace (or append) section ``name`` of the markdown file ``path`` (created when missing)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(old, name, body))
    return path


def cpu_name() -> str:
    """The processor's name: ``platform.processor()``, else ``model name`` of /proc/cpuinfo, else the machine."""
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def machine_line() -> str:
    """One line: CPU name, core count, OS and Python/torch versions."""
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def command_line() -> str:
    """The command that ran this script, as it could be typed again."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in [str(script), *sys.argv[1:]])


def load_label(before: float, after: float, explicit: str | None = None) -> str:
    """``explicit``, or a label from the load averages: above 0.5 the figures are called contended."""
    if explicit:
        return explicit
    busy = max(before, after) > 0.5
    return "busy machine (contended, preliminary)" if busy else "idle machine"
