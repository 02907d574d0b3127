"""The build requirement / runtime dependency follows the TensorFlow the environment has
(_build/tfup_build.py), so installing tfupsample never changes it."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def provider(monkeypatch):
    spec = importlib.util.spec_from_file_location("tfup_build", os.path.join(ROOT, "_build", "tfup_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("TFUPSAMPLE_TF_PACKAGE", raising=False)
    return module


@pytest.mark.parametrize("installed, expected", [
    (("tensorflow-cpu", "2.19.1"), "tensorflow-cpu==2.19.*"),
    (("tensorflow", "2.16.2"), "tensorflow==2.16.*"),
    (("tensorflow-intel", "2.21.0"), "tensorflow-intel==2.21.*"),
    (None, "tensorflow==2.21.*"),  # a fresh environment: the newest supported series
])
def test_requirement_pins_the_installed_series(provider, monkeypatch, installed, expected):
    monkeypatch.setattr(provider, "_installed_distribution", lambda: installed)
    assert provider.tensorflow_requirement() == expected
    assert provider.dynamic_metadata("dependencies")[-1] == expected
    assert provider.get_requires_for_dynamic_metadata() == [expected]


def test_override_of_the_distribution(provider, monkeypatch):
    monkeypatch.setattr(provider, "_installed_distribution", lambda: ("tensorflow", "2.18.0"))
    monkeypatch.setenv("TFUPSAMPLE_TF_PACKAGE", "tensorflow-cpu")
    assert provider.tensorflow_requirement() == "tensorflow-cpu==2.18.*"


@pytest.mark.parametrize("version", ["2.15.1", "2.22.0", "3.0.0"])
def test_unsupported_tensorflow_is_refused_with_the_range_and_the_fix(provider, monkeypatch, version):
    monkeypatch.setattr(provider, "_installed_distribution", lambda: ("tensorflow-cpu", version))
    with pytest.raises(RuntimeError, match=r"supports TensorFlow 2\.16 to 2\.21.*has tensorflow-cpu "
                                           + version.replace(".", r"\.") + r".*pip install"):
        provider.tensorflow_requirement()


def test_the_probe_reads_this_environment(provider):
    import importlib.metadata as md

    found = provider._installed_distribution()
    assert found is not None and md.version(found[0]) == found[1]
