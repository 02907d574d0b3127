"""Packaging glue: which TensorFlow to build against and depend on.

The op library only loads into the TensorFlow minor series it was compiled against, and
`tensorflow` / `tensorflow-cpu` / `tensorflow-intel` are distributions of the same module:
depending on another one makes pip install both over each other, and depending on another
version makes pip change the user's TensorFlow. So the requirement follows what the target
environment already has -- that distribution, pinned to its minor series (any of the supported
ones) -- and a fresh environment gets the newest supported series of `tensorflow`.
`TFUPSAMPLE_TF_PACKAGE` overrides the distribution. It is both the build requirement and the
runtime dependency (a scikit-build-core metadata provider).
"""

from __future__ import annotations

import os
import subprocess
import sys

SUPPORTED = ((2, 16), (2, 21))  # oldest and newest supported minor series, inclusive
OTHER_DEPENDENCIES = ["numpy>=1.24"]  # the tools' own needs are extras (pyproject.toml)
_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel")

_PROBE = """
import importlib.metadata as md
for name in {names!r}:
    try:
        print(name, md.version(name))
        break
    except md.PackageNotFoundError:
        continue
"""


def _installed_distribution() -> tuple[str, str] | None:
    """(distribution, version) of the TensorFlow in the target environment, if any."""
    # pip runs build hooks with the target interpreter but hides its site-packages behind
    # PYTHONPATH / PYTHONNOUSERSITE: ask a child without them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(names=_DISTRIBUTIONS)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out[0], out[1]) if len(out) == 2 else None


def _series(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def tensorflow_requirement() -> str:
    installed = _installed_distribution()
    name = os.environ.get("TFUPSAMPLE_TF_PACKAGE") or (installed[0] if installed else "tensorflow")
    if installed is None:
        major, minor = SUPPORTED[1]
        return f"{name}=={major}.{minor}.*"
    series = _series(installed[1])
    if not SUPPORTED[0] <= series <= SUPPORTED[1]:
        lo, hi = (".".join(map(str, s)) for s in SUPPORTED)
        raise RuntimeError(
            f"tfupsample supports TensorFlow {lo} to {hi}; this environment has {installed[0]} "
            f"{installed[1]}. Install a supported TensorFlow first (pip install '{installed[0]}>={lo},"
            f"<{SUPPORTED[1][0]}.{SUPPORTED[1][1] + 1}'), then tfupsample.")
    return f"{name}=={series[0]}.{series[1]}.*"


# scikit-build-core dynamic metadata provider protocol.
def dynamic_metadata(field, settings=None):
    if field != "dependencies":
        raise RuntimeError(f"tfup_build only provides 'dependencies', not {field!r}")
    return [*OTHER_DEPENDENCIES, tensorflow_requirement()]


def get_requires_for_dynamic_metadata(settings=None):
    return [tensorflow_requirement()]
