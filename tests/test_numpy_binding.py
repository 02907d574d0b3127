"""tfupsample.numpy: the pybind11 binding over the same C++ kernel."""

import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import tfupsample.numpy as tnp
from tfupsample.testing import assert_close, bilinear_loop, skimage_rescale


@pytest.mark.parametrize("factor", [1, 2, 3, 6])
def test_hwc_and_nhwc(factor, rng):
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    y = tnp.bilinear_upsample(x, factor)
    assert y.shape == (2, 4 * factor, 3 * factor, 5) and y.dtype == np.float32
    assert_close(y, skimage_rescale(x, factor), "float32")
    y0 = tnp.bilinear_upsample(x[0], factor)
    assert y0.shape == (4 * factor, 3 * factor, 5)
    np.testing.assert_array_equal(y0, y[0])


def test_float64_is_computed_in_float64(rng):
    x = rng.standard_normal((1, 3, 4, 2)) * 1e3 + 1.0
    y = tnp.bilinear_upsample(x, 7)
    assert y.dtype == np.float64
    assert_close(y, bilinear_loop(x, 7), "float64")


def test_any_strides(rng):
    base = rng.standard_normal((2, 8, 10, 6)).astype(np.float32)
    view = base[:, ::2, 1::3, ::2]  # non-contiguous in every axis
    assert not view.flags.c_contiguous
    assert_close(tnp.bilinear_upsample(view, 3), bilinear_loop(np.ascontiguousarray(view), 3), "float32")
    fortran = np.asfortranarray(base[0])
    np.testing.assert_array_equal(tnp.bilinear_upsample(fortran, 2), tnp.bilinear_upsample(base[0].copy(), 2))


def test_threads_get_correct_results(rng):
    """The GIL is released while the kernel runs; concurrent calls stay independent."""
    xs = [rng.standard_normal((1, 6, 7, 4)) for _ in range(6)]
    results = [None] * len(xs)

    def work(i):
        results[i] = tnp.bilinear_upsample(xs[i], 4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in zip(xs, results):
        assert_close(y, bilinear_loop(x, 4))


@pytest.mark.parametrize("args,err,match", [
    ((np.zeros((3, 3, 3), np.float32), 0), ValueError, "factor must be a positive integer, got 0"),
    ((np.zeros((3, 3, 3), np.float32), 2.5), TypeError, "factor must be a positive integer"),
    ((np.zeros((3, 3), np.float32), 2), ValueError, "array must be \\[H, W, C\\] or \\[N, H, W, C\\]"),
    ((np.zeros((3, 3, 3), np.int32), 2), TypeError, "array must be float32 or float64, got int32"),
    ((np.zeros((1, 1, 1), np.float32), 2**62), ValueError, "factor"),
])
def test_errors(args, err, match):
    with pytest.raises(err, match=match):
        tnp.bilinear_upsample(*args)


def test_import_does_not_import_tensorflow_nor_the_tools_extras():
    # scikit-image and matplotlib made unimportable: the library, its references included, needs neither.
    code = ("import sys; sys.modules['skimage'] = sys.modules['matplotlib'] = None; "
            "import numpy as np, tfupsample.numpy as t, tfupsample.testing as ref; "
            "y = t.bilinear_upsample(np.ones((2, 2, 1), np.float32), 2); "
            "ref.assert_close(y[None], ref.bilinear_loop(np.ones((1, 2, 2, 1)), 2), 'float32'); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; print(y.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(4, 4, 1)"
