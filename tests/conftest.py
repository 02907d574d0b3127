import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def emu(tmp_path_factory):
    """The CUDA kernels' launch sequences built as CPU code (tests/cuda_host), once per run."""
    from cuda_host import emulator

    if not emulator.have_nvcc():
        pytest.skip("needs nvcc")
    return emulator.build(str(tmp_path_factory.mktemp("cuda_host")))


@pytest.fixture(params=["kernels", "lowering"])
def xla_path(request, monkeypatch):
    """Both ways a function runs under XLA: tfupsample's custom calls, or the stock-op lowering
    (what a TF without the XLA kernels, or a GPU, gets; TFUPSAMPLE_XLA_KERNELS=0 asks for it)."""
    import tfupsample as tu

    if request.param == "lowering":
        monkeypatch.setenv("TFUPSAMPLE_XLA_KERNELS", "0")
    elif not tu.xla_kernels():
        pytest.skip(tu.xla_kernels_missing())
    return request.param
