"""Packaging glue: which TensorFlow distribution to build against and depend on.

The op library only loads into the TensorFlow it was compiled against, and `tensorflow` and
`tensorflow-cpu` are two distributions of the same module: depending on the wrong one makes pip
install both over each other. So the requirement follows what the target environment already
has (`TFUPSAMPLE_TF_PACKAGE` overrides it; a fresh environment gets `tensorflow`). It is used
both as a build requirement and as a runtime dependency (a scikit-build-core metadata provider).
"""

from __future__ import annotations

import os
import subprocess
import sys

TF_SERIES = "2.21.*"
OTHER_DEPENDENCIES = ["numpy>=1.24", "scikit-image>=0.21"]
_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel")

_PROBE = """
import importlib.metadata as md
for name in {names!r}:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        continue
    print(name)
    break
"""


def _installed_distribution() -> str | None:
    # pip runs build hooks with the target interpreter but hides its site-packages behind
    # PYTHONPATH / PYTHONNOUSERSITE: ask a child without them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(names=_DISTRIBUTIONS)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def tensorflow_requirement() -> str:
    name = os.environ.get("TFUPSAMPLE_TF_PACKAGE") or _installed_distribution() or "tensorflow"
    return f"{name}=={TF_SERIES}"


# scikit-build-core dynamic metadata provider protocol.
def dynamic_metadata(field, settings=None):
    if field != "dependencies":
        raise RuntimeError(f"tfup_build only provides 'dependencies', not {field!r}")
    return [*OTHER_DEPENDENCIES, tensorflow_requirement()]


def get_requires_for_dynamic_metadata(settings=None):
    return [tensorflow_requirement()]
