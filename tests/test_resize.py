"""tfupsample.image.resize / resize_bilinear against stock TF (bit for bit in float32: stock is the
reference that shares no code with ours) and against the float64 definition
(tfupsample.testing.resize_bilinear_loop); the gradient against ResizeBilinearGrad and the
definition's adjoint; the NumPy binding and the CUDA kernels (through the CPU emulation)."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
import tfupsample.testing as ref
from tfupsample import _numpy_ext

DTYPES = ["float16", "bfloat16", "float32", "float64"]
CONVENTIONS = {  # (align_corners, half_pixel_centers) -> tfupsample.testing's name
    (False, True): "half_pixel", (True, False): "align_corners", (False, False): "asymmetric"}
# (in_h, in_w, out_h, out_w): integer factors, fractional up and down, DeepLab's (n - 1) * s + 1,
# one-pixel inputs and outputs.
SIZES = [(3, 5, 6, 10), (4, 4, 32, 32), (3, 4, 27, 20), (9, 9, 65, 65), (33, 33, 100, 100),
         (100, 37, 37, 100), (13, 7, 5, 3), (1, 1, 5, 4), (5, 6, 1, 1), (1, 8, 3, 1), (7, 3, 7, 3)]


def _flags(convention):
    """resize_bilinear's keywords for a (align_corners, half_pixel_centers) pair."""
    return dict(align_corners=convention[0], half_pixel_centers=convention[1])


def _stock(x, size, align_corners, half_pixel_centers):
    return tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=align_corners,
                                     half_pixel_centers=half_pixel_centers)


@pytest.mark.parametrize("convention", list(CONVENTIONS), ids=list(CONVENTIONS.values()))
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_float32_is_stock_bit_for_bit_and_the_definition(sizes, convention, rng):
    h, w, oh, ow = sizes
    x = (rng.standard_normal((2, h, w, 3)) * 10).astype(np.float32)
    ours = tu.resize_bilinear(x, [oh, ow], **_flags(convention))
    assert ours.dtype == tf.float32 and ours.shape == (2, oh, ow, 3)
    np.testing.assert_array_equal(ours.numpy(), _stock(x, [oh, ow], *convention).numpy())
    ref.assert_close(ours, ref.resize_bilinear_loop(x, (oh, ow), CONVENTIONS[convention]), "float32", "resize")
    nchw = tu.resize_bilinear(x.transpose(0, 3, 1, 2), [oh, ow], **_flags(convention), data_format="NCHW")
    np.testing.assert_array_equal(nchw.numpy().transpose(0, 2, 3, 1), ours.numpy())


def test_many_random_sizes_are_stock_bit_for_bit(rng):
    # Sizes where float32's scale and sample positions round: every pair of 1..40 seen on the way.
    for _ in range(60):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 41, 4))
        convention = list(CONVENTIONS)[int(rng.integers(0, 3))]
        x = rng.standard_normal((1, h, w, 2)).astype(np.float32)
        np.testing.assert_array_equal(tu.resize_bilinear(x, [oh, ow], **_flags(convention)).numpy(),
                                      _stock(x, [oh, ow], *convention).numpy(), err_msg=str((h, w, oh, ow)))


@pytest.mark.parametrize("dtype", DTYPES + ["int8", "uint8", "int16", "uint16", "int32", "int64"])
def test_every_input_dtype_gives_stocks_float32(dtype, rng):
    x = tf.cast(rng.standard_normal((2, 5, 4, 3)) * 50, dtype)
    for size in ([10, 8], [3, 7]):
        ours, stock = tu.image.resize(x, size), tf.image.resize(x, size)
        assert ours.dtype == stock.dtype == tf.float32
        np.testing.assert_array_equal(ours.numpy(), stock.numpy())
        v1 = tu.image.resize_bilinear(x, size, align_corners=True)
        np.testing.assert_array_equal(v1.numpy(), tf.compat.v1.image.resize_bilinear(x, size, align_corners=True).numpy())


def test_resize_takes_what_tf_image_resize_takes(rng):
    x = rng.standard_normal((6, 9, 4)).astype(np.float32)  # one image, 3-D
    np.testing.assert_array_equal(tu.image.resize(x, [13, 5]).numpy(), tf.image.resize(x, [13, 5]).numpy())
    labels = tf.zeros([2, 17, 11])
    size = tf.shape(labels)[1:3]  # Model Garden's size: a tensor
    xb = x[None].repeat(2, 0)
    np.testing.assert_array_equal(tu.image.resize(xb, size).numpy(), tf.image.resize(xb, size).numpy())
    np.testing.assert_array_equal(tu.image.resize(xb, [tf.constant(4), 7]).numpy(),
                                  tf.image.resize(xb, [4, 7]).numpy())
    for size in ([20, 5], [5, 20], [7, 7]):
        np.testing.assert_array_equal(tu.image.resize(xb, size, preserve_aspect_ratio=True).numpy(),
                                      tf.image.resize(xb, size, preserve_aspect_ratio=True).numpy())
    # What the kernel does not cover is stock's own answer.
    for kw in (dict(method="bicubic"), dict(method="nearest"), dict(antialias=True),
               dict(method=tf.image.ResizeMethod.AREA)):
        np.testing.assert_array_equal(tu.image.resize(xb, [13, 5], **kw).numpy(),
                                      tf.image.resize(xb, [13, 5], **kw).numpy())
    assert tu.resize is tu.image.resize and tu.resize_bilinear is tu.image.resize_bilinear
    # Unknown sizes when tracing: the static shape follows what is known.
    f = tf.function(lambda v, s: tu.image.resize(v, s),
                    input_signature=[tf.TensorSpec([None, 6, 9, 4]), tf.TensorSpec([2], tf.int32)])
    assert f.get_concrete_function().structured_outputs.shape.as_list() == [None, None, None, 4]
    g = tf.function(lambda v: tu.image.resize(v, [12, 18]), input_signature=[tf.TensorSpec([None, 6, 9, 4])])
    assert g.get_concrete_function().structured_outputs.shape.as_list() == [None, 12, 18, 4]


def test_empty_batch():
    y = tu.image.resize(np.zeros((0, 3, 4, 2), np.float32), [6, 8])
    assert y.shape == (0, 6, 8, 2)
    with tf.GradientTape() as tape:
        x = tf.zeros((0, 3, 4, 2))
        tape.watch(x)
        y = tu.image.resize(x, [6, 8])
    assert tape.gradient(y, x).shape == (0, 3, 4, 2)


# ---- gradient ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", list(CONVENTIONS), ids=list(CONVENTIONS.values()))
@pytest.mark.parametrize("sizes", [(3, 5, 6, 10), (3, 4, 27, 20), (9, 9, 65, 65), (100, 37, 37, 100),
                                   (1, 1, 5, 4), (5, 6, 1, 1), (40, 3, 77, 5)], ids=str)
def test_gradient_equals_stock_and_the_adjoint(sizes, convention, dtype, rng):
    h, w, oh, ow = sizes
    x = tf.cast(rng.standard_normal((2, h, w, 3)), dtype)
    g = rng.standard_normal((2, oh, ow, 3)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(tu.resize_bilinear(x, [oh, ow], **_flags(convention)) * g)
        stock = tf.reduce_sum(_stock(x, [oh, ow], *convention) * g)
    dx = tape.gradient(ours, x)
    assert dx.dtype == x.dtype
    expected = ref.resize_bilinear_grad_loop(g, (h, w), CONVENTIONS[convention])
    ref.assert_close(dx, expected, dtype, "resize_grad")
    if dtype not in ("float16", "bfloat16"):  # stock accumulates the half types in the half type
        # (and forms each product in float32: resize_grad's bound for float64 too)
        ref.assert_close(dx, tape.gradient(stock, x), dtype, "resize_grad")
    nchw = tf.transpose(x, [0, 3, 1, 2])
    with tf.GradientTape() as tape:
        tape.watch(nchw)
        y = tu.resize_bilinear(nchw, [oh, ow], **_flags(convention), data_format="NCHW")
        loss = tf.reduce_sum(y * g.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(tf.transpose(tape.gradient(loss, nchw), [0, 2, 3, 1]).numpy(), dx.numpy())


# Channel counts around the float x pass's vectors (2 to 4 of them, the last partial, go in one
# masked pass over the row; 16, 64 and 70 in blocks), at DeepLab's align-corners factor 8 and a
# fractional half-pixel size.
@pytest.mark.parametrize("channels", [2, 5, 16, 19, 21, 45, 63, 64, 70])
@pytest.mark.parametrize("sizes,convention", [((5, 4, 33, 25), (True, False)), ((7, 6, 20, 23), (False, True))],
                         ids=["align_corners_x8", "half_pixel"])
def test_gradient_channel_counts(channels, sizes, convention, rng):
    h, w, oh, ow = sizes
    g = rng.standard_normal((2, oh, ow, channels)).astype(np.float32)
    dx = tu._ops.lib.tfupsample_resize_bilinear_grad(g, [h, w], T=tf.float32, align_corners=convention[0],
                                                     half_pixel_centers=convention[1])
    ref.assert_close(dx, ref.resize_bilinear_grad_loop(g, (h, w), CONVENTIONS[convention]), "float32", "resize_grad")
    stock = tf.raw_ops.ResizeBilinearGrad(grads=g, original_image=tf.zeros((2, h, w, channels)),
                                          align_corners=convention[0], half_pixel_centers=convention[1])
    ref.assert_close(dx, stock, "float32", "resize_grad")


# Output rows whose two taps are one input row -- every eighth at align-corners x8 (exact taps),
# the first and last four at half-pixel x8 (clamped edges) -- are summed with the run of rows
# after them. A batch of 4 at 33 and 17 rows makes bands of several input rows, so that such rows
# fall inside bands and on their first rows. A non-finite value there reaches its one input row
# (its zero weight's term is NaN there, as in stock's sum) and no other.
@pytest.mark.parametrize("sizes,convention", [((33, 9, 257, 65), (True, False)), ((17, 6, 129, 41), (True, False)),
                                              ((33, 9, 264, 72), (False, True))], ids=str)
def test_gradient_rows_on_one_input_row(sizes, convention, rng):
    h, w, oh, ow = sizes
    g = rng.standard_normal((4, oh, ow, 21)).astype(np.float32)
    run = lambda dy: tu._ops.lib.tfupsample_resize_bilinear_grad(  # noqa: E731
        dy, [h, w], T=tf.float32, align_corners=convention[0], half_pixel_centers=convention[1]).numpy()
    stock = lambda dy: tf.raw_ops.ResizeBilinearGrad(  # noqa: E731
        grads=dy, original_image=tf.zeros((4, h, w, 21)), align_corners=convention[0],
        half_pixel_centers=convention[1]).numpy()
    dx = run(g)
    ref.assert_close(dx, ref.resize_bilinear_grad_loop(g, (h, w), CONVENTIONS[convention]), "float32", "resize_grad")
    ref.assert_close(dx, stock(g), "float32", "resize_grad")
    g[1, 8 * 5, 7, 3] = np.inf  # align-corners: on input row 5; half-pixel: inside a run
    g[2, 0, 0, 0] = -np.inf  # the first row: on input row 0 in both
    g[3, oh - 1, 4, 20] = np.nan
    dx, expected = run(g), stock(g)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(expected))
    assert np.isnan(dx).any()
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(dx[~finite], expected[~finite])  # NaN and the infinities where stock's are
    ref.assert_close(dx[finite], expected[finite], "float32", "resize_grad")


# The forward's rows on one input row go out with the run after them (one unit): each still
# lerps that row with itself, as TF does, so a non-finite value in the next input row stays out of
# it (a lerp weight of 0 times inf would be NaN there).
@pytest.mark.parametrize("sizes,convention", [((33, 9, 257, 65), (True, False)), ((33, 9, 264, 72), (False, True))],
                         ids=str)
def test_forward_rows_on_one_input_row(sizes, convention, rng):
    h, w, oh, ow = sizes
    x = rng.standard_normal((4, h, w, 21)).astype(np.float32)
    x[1, 6, 3, 2] = np.inf  # the row after input row 5, on which align-corners' output row 40 lies
    x[2, 0, 0, 0] = -np.inf
    x[3, 1, 4, 20] = np.nan
    ours = tu.resize_bilinear(x, [oh, ow], **_flags(convention)).numpy()
    np.testing.assert_array_equal(ours, _stock(x, [oh, ow], *convention).numpy())
    assert np.isfinite(ours[1, 40]).all() or not convention[0]


def test_gradient_is_the_same_bits_every_time(rng):
    x = tf.constant(rng.standard_normal((2, 17, 23, 40)), tf.float32)
    g = tf.constant(rng.standard_normal((2, 64, 97, 40)), tf.float32)
    raw = lambda: tu._ops.lib.tfupsample_resize_bilinear_grad(g, [17, 23], T=tf.float32, half_pixel_centers=True)  # noqa: E731
    first = raw().numpy()
    for _ in range(5):
        np.testing.assert_array_equal(raw().numpy(), first)
    ref.assert_close(first, ref.resize_bilinear_grad_loop(g.numpy(), (17, 23)), "float32", "resize_grad")
    del x


@pytest.mark.parametrize("sizes", [(5, 6, 23, 31), (9, 9, 65, 65), (37, 37, 10, 11)], ids=str)
def test_gradient_of_negative_zeros_is_positive_zero_as_stock(sizes):
    # Each input-gradient element starts from +0 and adds its terms (as ResizeBilinearGrad does), so
    # an all -0 output gradient gives +0 everywhere: a kernel that started an element from its
    # first term instead would give -0.
    h, w, oh, ow = sizes
    dy = tf.fill([2, oh, ow, 19], -0.0)
    ours = tu._ops.lib.tfupsample_resize_bilinear_grad(dy, [h, w], T=tf.float32, half_pixel_centers=True).numpy()
    stock = tf.raw_ops.ResizeBilinearGrad(grads=dy, original_image=tf.zeros([2, h, w, 19]),
                                          half_pixel_centers=True).numpy()
    assert not np.signbit(stock).any()
    ref.assert_same_bits(ours, stock)


def test_gradient_of_the_gradient_is_the_resize(rng):
    # The gradient op is linear in output_grad; its own gradient is the forward resize.
    dy = tf.constant(rng.standard_normal((1, 8, 6, 2)), tf.float32)
    v = tf.constant(rng.standard_normal((1, 3, 5, 2)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(dy)
        dx = tu._ops.lib.tfupsample_resize_bilinear_grad(dy, [3, 5], T=tf.float32, align_corners=True)
        loss = tf.reduce_sum(dx * v)
    np.testing.assert_array_equal(tape.gradient(loss, dy).numpy(),
                                  _stock(v, [8, 6], True, False).numpy())


# ---- XLA, errors --------------------------------------------------------------------------------

def test_under_xla(rng, xla_path):
    x = tf.constant(rng.standard_normal((2, 5, 7, 3)), tf.float32)
    g = rng.standard_normal((2, 13, 9, 3)).astype(np.float32)

    def step(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(tu.image.resize(v, [13, 9]) * g)
        return tu.image.resize(v, [13, 9]), tape.gradient(loss, v)

    y, dx = tf.function(step, jit_compile=True)(x)
    if xla_path == "kernels":  # the kernel: the eager op's bits, which are TF's CPU kernel's
        y_eager, dx_eager = step(x)
        np.testing.assert_array_equal(y.numpy(), y_eager.numpy())
        np.testing.assert_array_equal(dx.numpy(), dx_eager.numpy())
    else:  # XLA's own lowering of ResizeBilinear (not TF's CPU kernel): its bits
        stock_xla = tf.function(lambda v: tf.image.resize(v, [13, 9]), jit_compile=True)(x)
        np.testing.assert_array_equal(y.numpy(), stock_xla.numpy())
    ref.assert_close(y, ref.resize_bilinear_loop(x.numpy(), (13, 9)), "float32", "resize")
    ref.assert_close(dx, ref.resize_bilinear_grad_loop(g, (5, 7)), "float32", "resize_grad")
    with tu.stock_ops():
        graph = tf.function(lambda v: tu.image.resize(v, [13, 9])).get_concrete_function(x).graph
    assert not [op.type for op in graph.get_operations() if op.type.startswith("Tfupsample")]


def test_eager_fast_path_is_the_general_path(rng, monkeypatch):
    """An eager call with (h, w) as ints skips the general path's conversions: the same bits as
    that path (a NumPy size takes it), in every convention and layout; under stock_ops() it runs
    the stock op, never the kernel."""
    x = tf.constant(rng.standard_normal((2, 5, 7, 3)).astype(np.float32))
    xc = tf.transpose(x, [0, 3, 1, 2])
    calls = [lambda s: tu.image.resize(x, s), lambda s: tu.image.resize(xc, s, data_format="NCHW"),
             lambda s: tu.image.resize_bilinear(x, s, align_corners=True),
             lambda s: tu.image.resize_bilinear(tf.cast(x, tf.float16), s),
             lambda s: tu.image.resize_bilinear(xc, s, half_pixel_centers=True, data_format="NCHW")]
    for call in calls:
        np.testing.assert_array_equal(call((13, 9)).numpy(), call(np.array([13, 9])).numpy())
        np.testing.assert_array_equal(call([4, 3]).numpy(), call(np.array([4, 3])).numpy())

    def kernel(*args, **kwargs):
        raise AssertionError("the kernel ran inside tfupsample.stock_ops()")

    monkeypatch.setattr(tu._ops.lib, "tfupsample_resize_bilinear", kernel)
    with tu.stock_ops():
        np.testing.assert_array_equal(tu.image.resize(x, (13, 9)).numpy(), tf.image.resize(x, (13, 9)).numpy())
        np.testing.assert_array_equal(tu.image.resize_bilinear(x, (13, 9), align_corners=True).numpy(),
                                      tf.compat.v1.image.resize_bilinear(x, (13, 9), align_corners=True).numpy())


@pytest.mark.parametrize("call,err,match", [
    (lambda x: tu.resize_bilinear(x, [4, 4], align_corners=True, half_pixel_centers=True), ValueError,
     "If half_pixel_centers is True, align_corners must be False"),
    (lambda x: tu.image.resize(x, [0, 4]), ValueError, r"size must be positive.*\[0, 4\]"),
    (lambda x: tu.image.resize(x, [4, 4, 4]), ValueError, "size must be a 1-D tensor of 2 elements"),
    (lambda x: tu.image.resize(x, [4.0, 4.0]), TypeError, "size must be a 1-D int32 tensor"),
    (lambda x: tu.image.resize(x[0, 0], [4, 4]), ValueError, "images must be a 3 or 4-D tensor"),
    (lambda x: tu.resize_bilinear(x[0], [4, 4]), ValueError, "images must be a 4-D tensor"),
    (lambda x: tu.image.resize(tf.cast(x, tf.bool), [4, 4]), TypeError, "images must be a float or integer"),
    (lambda x: tu.image.resize(x, [4, 4], data_format="NWHC"), ValueError, "data_format"),
])
def test_bad_arguments_are_named(call, err, match):
    with pytest.raises(err, match=match):
        call(tf.zeros([1, 3, 3, 2]))


def test_arguments_stock_refuses_get_stocks_kind_of_error():
    """Where stock's kernel raises InvalidArgumentError, ours (caught before the kernel, naming
    the argument) is one too, and a ValueError."""
    x = tf.zeros([1, 3, 3, 2])
    calls = [(lambda f: f(x, [0, 4]), tf.image.resize, tu.image.resize),
             (lambda f: f(x, [4, 4], align_corners=True, half_pixel_centers=True),
              tf.compat.v1.image.resize_bilinear, tu.image.resize_bilinear)]
    for call, stock, ours in calls:
        with pytest.raises(tf.errors.InvalidArgumentError):
            call(stock)
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            call(ours)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="Resize method is not implemented: BILINEAR"):  # stock's spelling rule
        tu.image.resize(x, [4, 4], method="BILINEAR")
    # Re-raised by autograph inside a tf.function and by Keras' traceback filter from a layer:
    # still both kinds, with the message.
    with pytest.raises(tf.errors.InvalidArgumentError, match="size must be positive") as caught:
        tf.function(lambda v: tu.image.resize(v, [0, 4]))(x)
    assert isinstance(caught.value, ValueError)
    import keras

    from tfupsample.keras import Resizing

    with pytest.raises(tf.errors.InvalidArgumentError):
        keras.layers.Resizing(0, 4)(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="size must be positive"):
        Resizing(0, 4)(x)
    import pickle

    error = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(error, tu.image.InvalidArgumentError) and "size must be positive" in str(error)


def test_resize_bilinear_takes_stocks_positional_order(rng):
    stock_params = list(inspect.signature(tf.compat.v1.image.resize_bilinear).parameters)
    assert list(inspect.signature(tu.image.resize_bilinear).parameters)[:len(stock_params)] == stock_params
    stock_params = list(inspect.signature(tf.image.resize).parameters)
    assert list(inspect.signature(tu.image.resize).parameters)[:len(stock_params)] == stock_params
    x = tf.constant(rng.standard_normal((2, 5, 4, 3)), tf.float32)
    for args in ((False, "up"), (True, "up"), (False, None, True), (False, "up", False)):
        np.testing.assert_array_equal(tu.image.resize_bilinear(x, [9, 7], *args).numpy(),
                                      tf.compat.v1.image.resize_bilinear(x, [9, 7], *args).numpy(), err_msg=str(args))
    np.testing.assert_array_equal(tu.image.resize(x, [9, 7], tf.image.ResizeMethod.BILINEAR, True).numpy(),
                                  tf.image.resize(x, [9, 7], tf.image.ResizeMethod.BILINEAR, True).numpy())


def test_ragged_images_get_stocks_answer(rng):
    images = tf.ragged.stack([tf.constant(rng.standard_normal((h, w, 3)), tf.float32) for h, w in ((4, 6), (7, 3))])
    np.testing.assert_array_equal(tu.image.resize(images, [5, 5]).numpy(), tf.image.resize(images, [5, 5]).numpy())


def test_raw_ops_check_everything_stock_checks():
    lib = tu._ops.lib
    x = np.zeros((1, 3, 4, 2), np.float32)
    for size, match in (([0, 4], "output dimensions must be positive"), ([4], "size must be a 1-D tensor of 2"),
                        ([-1, 4], "output dimensions must be positive")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            lib.tfupsample_resize_bilinear(x, size)
    for shape, match in (((1, 0, 4, 2), "input image must be of non-zero size"),
                         ((1, 3, 4, 0), "image must have at least one channel"), ((3, 4, 2), "images must be 4-D")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            lib.tfupsample_resize_bilinear(np.zeros(shape, np.float32), [4, 4])
        # stock refuses the same inputs
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            tf.raw_ops.ResizeBilinear(images=np.zeros(shape, np.float32), size=[4, 4])
    with pytest.raises(tf.errors.InvalidArgumentError, match="align_corners must be False"):
        lib.tfupsample_resize_bilinear(x, [4, 4], align_corners=True, half_pixel_centers=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_size / output_grad: output dimensions"):
        lib.tfupsample_resize_bilinear_grad(np.zeros((1, 0, 4, 2), np.float32), [3, 4], T=tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_size must be a 1-D tensor of 2"):
        lib.tfupsample_resize_bilinear_grad(np.zeros((1, 5, 4, 2), np.float32), [3], T=tf.float32)


# ---- NumPy binding and CUDA kernels ----------------------------------------------------------

def test_numpy_binding_is_the_same_kernel(rng):
    import tfupsample.numpy as tnp

    x = rng.standard_normal((2, 7, 5, 3))
    for convention in CONVENTIONS:
        expected = _stock(x.astype(np.float32), [11, 13], *convention).numpy()
        np.testing.assert_array_equal(tnp.resize_bilinear(x.astype(np.float32), [11, 13], *convention), expected)
        # float64 input: rounded to float32 first, as TF's kernel does
        np.testing.assert_array_equal(tnp.resize_bilinear(x, [11, 13], *convention), expected)
    np.testing.assert_array_equal(tnp.resize(x[0].astype(np.float32), (11, 13)),
                                  tf.image.resize(x[0].astype(np.float32), [11, 13]).numpy())
    with pytest.raises(ValueError, match="size must be positive"):
        tnp.resize(x, (0, 3))
    for bad in ((10.7, 3), (3,), "ab", None):
        with pytest.raises(TypeError, match="size must be"):
            tnp.resize(x, bad)
    with pytest.raises(ValueError, match="input image must be of non-zero size"):
        _numpy_ext.resize_bilinear(np.zeros((1, 0, 3, 2), np.float32), 2, 2, False, True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_cuda_kernels_give_the_cpu_bits(emu, layout, dtype, rng):
    import ml_dtypes

    import tfupsample.cuda as tc
    from cuda_host import emulator

    np_t = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float64": np.float64}[dtype]
    code = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}[dtype]
    ext = emulator.Ext(emu)
    # (17, 9, 129, 65): NHWC bands of 2 input rows too (2 images), so rows on one input row join
    # the run after them on a band's first row.
    for (h, w, oh, ow), c in ((((3, 5, 8, 13)), 3), ((9, 9, 65, 65), 2), ((12, 7, 5, 3), 40), ((1, 1, 3, 2), 1),
                              ((17, 9, 129, 65), 2)):
        for convention, name in CONVENTIONS.items():
            x = (rng.standard_normal((2, h, w, c)) * 5).astype(np_t)
            g = rng.standard_normal((2, oh, ow, c)).astype(np.float32)
            args = tc._args(2, h, w, c, oh, ow, (1, 1), (1, 1), data_format=layout, resize=name)
            y = np.full(ref.to_layout(np.zeros((2, oh, ow, c)), layout).shape, np.nan, np.float32)
            xin = ref.to_layout(x, layout)
            ext.run("ResizeBilinear", args, code, [xin.ctypes.data, y.ctypes.data], 0)
            cpu = tu.resize_bilinear(tf.constant(xin.astype(np.float64), dtype), [oh, ow], **_flags(convention),
                                     data_format=layout)
            np.testing.assert_array_equal(y, cpu.numpy(), err_msg=f"forward {(h, w, oh, ow)} {name}")
            dx = np.full(xin.shape, np.nan, np_t)
            gin = ref.to_layout(g, layout)
            ext.run("ResizeBilinearBackpropInput", args, code, [gin.ctypes.data, dx.ctypes.data], 0)
            cpu_dx = tu._ops.lib.tfupsample_resize_bilinear_grad(
                gin, [h, w], T=dtype, align_corners=convention[0], half_pixel_centers=convention[1],
                data_format=layout)
            np.testing.assert_array_equal(dx.astype(np.float64), tf.cast(cpu_dx, tf.float64).numpy(),
                                          err_msg=f"gradient {(h, w, oh, ow)} {name}")
            ref.assert_close(ref.from_layout(dx, layout), ref.resize_bilinear_grad_loop(g, (h, w), name), dtype,
                             "resize_grad")


# ---- Keras drop-ins --------------------------------------------------------------------------

@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_keras_upsampling2d_and_resizing_are_drop_ins(data_format, policy, rng):
    import keras

    from tfupsample.keras import Resizing, UpSampling2D

    x = rng.standard_normal((2, 5, 7, 3) if data_format == "channels_last" else (2, 3, 5, 7)).astype(np.float32)
    pairs = [(UpSampling2D((2, 3), data_format=data_format, interpolation="bilinear", dtype=policy),
              keras.layers.UpSampling2D((2, 3), data_format=data_format, interpolation="bilinear", dtype=policy)),
             (Resizing(13, 4, data_format=data_format, dtype=policy),
              keras.layers.Resizing(13, 4, data_format=data_format, dtype=policy))]
    for ours, stock in pairs:
        a, b = ours(x), stock(x)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
        assert ours.compute_output_shape(x.shape) == stock.compute_output_shape(x.shape)
        config = ours.get_config()
        assert {k: v for k, v in config.items() if k != "name"} == {
            k: v for k, v in stock.get_config().items() if k != "name"}
        assert type(ours).from_config(config).get_config() == config


def test_keras_layers_keep_the_stock_cases_and_the_kernel(rng):
    import keras

    from tfupsample.keras import Resizing, UpSampling2D

    x = rng.standard_normal((2, 6, 9, 3)).astype(np.float32)
    for ours, stock in ((UpSampling2D(2), keras.layers.UpSampling2D(2)),  # nearest
                        (Resizing(4, 4, crop_to_aspect_ratio=True), keras.layers.Resizing(4, 4, crop_to_aspect_ratio=True)),
                        (Resizing(4, 4, interpolation="bicubic"), keras.layers.Resizing(4, 4, interpolation="bicubic")),
                        (Resizing(4, 4), keras.layers.Resizing(4, 4))):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(stock(x)))
    uint8 = (rng.uniform(0, 255, (1, 6, 9, 3))).astype(np.uint8)  # the stock layer's rounding and saturation
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Resizing(7, 5)(uint8)),
                                  keras.ops.convert_to_numpy(keras.layers.Resizing(7, 5)(uint8)))
    ints = tf.constant(rng.integers(-50, 50, (1, 3, 4, 2)), tf.int32)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(UpSampling2D(3, interpolation="bilinear", dtype="int32")(ints)),
        keras.ops.convert_to_numpy(keras.layers.UpSampling2D(3, interpolation="bilinear", dtype="int32")(ints)))
    graph = tf.function(lambda v: UpSampling2D(4, interpolation="bilinear")(v)).get_concrete_function(
        tf.TensorSpec([None, 6, 9, 3])).graph
    assert "TfupsampleResizeBilinear" in [op.type for op in graph.get_operations()]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "float64"])
def test_keras_layers_cast_their_result_as_stock_does(policy):
    """Outside float32 the stock layers (Keras 3.6 and later) clip the float32 resize to the
    compute dtype's finite range before casting: inf and values past float16's range saturate."""
    import keras

    from tfupsample.keras import Resizing, UpSampling2D

    x = np.zeros((1, 4, 5, 3), np.float32)
    x[0, 1, 2] = [np.inf, -np.inf, 1e6]
    x[0, 3, 0] = [np.nan, 3e38, -7e4]
    pairs = [(Resizing(9, 7, dtype=policy), keras.layers.Resizing(9, 7, dtype=policy)),
             (UpSampling2D(2, interpolation="bilinear", dtype=policy),
              keras.layers.UpSampling2D(2, interpolation="bilinear", dtype=policy))]
    for ours, stock in pairs:
        a, b = ours(x), stock(x)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a).astype(np.float64),
                                      keras.ops.convert_to_numpy(b).astype(np.float64))


def test_keras_resizing_takes_unbatched_images_and_stocks_fill_mode_rule(rng):
    import keras

    from tfupsample.keras import Resizing

    x = rng.standard_normal((6, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Resizing(4, 11)(x)),
                                  keras.ops.convert_to_numpy(keras.layers.Resizing(4, 11)(x)))
    if "fill_mode" in inspect.signature(keras.layers.Resizing).parameters:
        with pytest.raises(Exception) as stock:
            keras.layers.Resizing(4, 4, fill_mode="reflect")(x)
        assert "fill_mode" in str(stock.value)
        with pytest.raises(type(stock.value), match="fill_mode"):
            Resizing(4, 4, fill_mode="reflect")(x)


def test_keras_model_with_the_layers_trains_saves_and_loads(tmp_path, rng):
    import keras

    from tfupsample.keras import Resizing, UpSampling2D

    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 8, 3))
    h = keras.layers.Conv2D(4, 1)(inp)
    out = Resizing(12, 16)(UpSampling2D(2, interpolation="bilinear")(h))
    model = keras.Model(inp, out)
    model.compile("sgd", "mse")
    x = rng.standard_normal((4, 6, 8, 3)).astype(np.float32)
    model.fit(x, rng.standard_normal((4, 12, 16, 4)).astype(np.float32), verbose=0, epochs=2)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[2], UpSampling2D) and isinstance(loaded.layers[3], Resizing)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)))
