"""Bad input: a clear error naming the argument, from the Python API and from the raw ops
(which must be safe when called directly); never a crash, a hang or garbage."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample._ops import lib

X = np.zeros((1, 4, 5, 3), np.float32)
W = np.ones((4, 4, 3, 1), np.float32)
OUT = [1, 8, 10, 3]
RAW_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)


def raw(x=X, w=W, out=OUT, strides=(2, 2), padding="SAME", data_format="NHWC"):
    return lib.tfupsample_depthwise_conv2d_transpose(x, w, out, strides=list(strides), padding=padding,
                                              data_format=data_format)


# ---- bilinear_upsample ------------------------------------------------------------------------

@pytest.mark.parametrize("factor,err,match", [
    (0, ValueError, "factor must be a positive integer, got 0"),
    (-2, ValueError, "factor must be a positive integer, got -2"),
    (1.5, TypeError, "factor must be a positive integer, got 1.5"),
    ("2", TypeError, "factor must be a positive integer"),
    (True, TypeError, "factor must be a positive integer"),
    (2**40, ValueError, "factor 1099511627776 is too large"),
])
def test_bad_factor(factor, err, match):
    with pytest.raises(err, match=match):
        tu.bilinear_upsample(X, factor)


@pytest.mark.parametrize("factor", [0, -3, 2**40])
def test_bad_factor_raw_op(factor):
    with pytest.raises(tf.errors.InvalidArgumentError, match="factor"):
        lib.tfupsample_bilinear_upsample(X, factor=factor)


def test_raw_op_output_too_large_is_an_error_not_a_crash():
    with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError)):
        lib.tfupsample_bilinear_upsample(np.zeros((1, 1, 1, 1), np.float32), factor=2**31)


def test_bad_rank():
    with pytest.raises(ValueError, match="images must be a 4-D tensor"):
        tu.bilinear_upsample(np.zeros((4, 5, 3), np.float32), 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be 4-D"):
        lib.tfupsample_bilinear_upsample(np.zeros((4, 5, 3), np.float32), factor=2)
    with pytest.raises(ValueError, match="input must be a 4-D tensor"):
        tu.depthwise_conv2d_transpose(X[0], W, OUT, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input must be 4-D"):
        raw(x=X[0])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_dtypes_are_refused(dtype):
    with pytest.raises(TypeError, match="images must be float16, bfloat16, float32 or float64"):
        tu.bilinear_upsample(X.astype(dtype), 2)
    with pytest.raises(TypeError, match="input must be float16"):
        tu.depthwise_conv2d_transpose(X.astype(dtype), W, OUT, 2)
    with pytest.raises(RAW_ERRORS + (tf.errors.NotFoundError,),
                       match=r"attr 'T' of \w+ is not in the list of allowed values: half, bfloat16, float, double"):
        lib.tfupsample_bilinear_upsample(X.astype(dtype), factor=2)


def test_unknown_data_format_and_impl():
    with pytest.raises(ValueError, match="data_format must be 'NHWC' or 'NCHW', got 'NWHC'"):
        tu.bilinear_upsample(X, 2, data_format="NWHC")
    with pytest.raises(ValueError, match="data_format"):
        tu.depthwise_conv2d_transpose(X, W, OUT, 2, data_format="channels_last")
    with pytest.raises(ValueError, match="impl must be"):
        tu.bilinear_upsample(X, 2, impl="fast")
    with pytest.raises(RAW_ERRORS, match="attr 'data_format' of \"NWHC\" is not in the list of allowed values: \"NHWC\", \"NCHW\""):
        lib.tfupsample_bilinear_upsample(X, factor=2, data_format="NWHC")


# ---- depthwise_conv2d_transpose ---------------------------------------------------------------

def test_filter_rank():
    with pytest.raises(ValueError, match="filter must be a 4-D tensor"):
        tu.depthwise_conv2d_transpose(X, W[..., 0], OUT, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="filter must be 4-D"):
        raw(w=W[..., 0])


def test_filter_channels_must_match_input():
    w = np.ones((4, 4, 5, 1), np.float32)
    with pytest.raises(ValueError, match="filter has 5 channels but input has 3"):
        tu.depthwise_conv2d_transpose(X, w, OUT, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="filter has 5 channels but input has 3"):
        raw(w=w)


def test_channel_multiplier_must_be_one():
    w = np.ones((4, 4, 3, 2), np.float32)
    with pytest.raises(ValueError, match="channel multiplier 1"):
        tu.depthwise_conv2d_transpose(X, w, [1, 8, 10, 6], 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="channel multiplier 1"):
        raw(w=w, out=[1, 8, 10, 6])


def test_filter_dtype_must_match():
    with pytest.raises(TypeError, match="filter must have the input's dtype float32, got float64"):
        tu.depthwise_conv2d_transpose(X, tf.constant(W, tf.float64), OUT, 2)


@pytest.mark.parametrize("strides", [0, -1, [2, 0], [1, 2, 2, 2], [2.5, 2], "2", [1, 2, 3]])
def test_bad_strides(strides):
    with pytest.raises(ValueError, match="strides"):
        tu.depthwise_conv2d_transpose(X, W, OUT, strides)


@pytest.mark.parametrize("strides", [(0, 2), (2, -1), (2, 2, 2)])
def test_bad_strides_raw_op(strides):
    with pytest.raises(tf.errors.InvalidArgumentError, match="strides"):
        raw(strides=strides)


def test_bad_padding():
    with pytest.raises(ValueError, match="padding must be 'SAME' or 'VALID', got 'FULL'"):
        tu.depthwise_conv2d_transpose(X, W, OUT, 2, padding="FULL")
    with pytest.raises(ValueError, match="padding"):
        tu.depthwise_conv2d_transpose(X, W, OUT, 2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    with pytest.raises(RAW_ERRORS, match="attr 'padding' of \"FULL\" is not in the list of allowed values: \"SAME\", \"VALID\""):
        raw(padding="FULL")


@pytest.mark.parametrize("out,match", [
    ([1, -8, 10, 3], "output_shape must be non-negative"),
    ([1, 8, 10], "output_shape must have 4 elements"),
    ([1, 8.5, 10, 3], "output_shape must be a list of 4 integers"),
])
def test_bad_output_shape(out, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tu.depthwise_conv2d_transpose(X, W, out, 2)


@pytest.mark.parametrize("out,match", [
    ([1, 9, 10, 3], "height: output size 9 is inconsistent.*expected a value in \\[7, 8\\]"),
    ([1, 8, 30, 3], "width: output size 30 is inconsistent"),
    ([2, 8, 10, 3], "batch"),
    ([1, 8, 10, 4], "channels"),
    ([1, -8, 10, 3], "output_shape must be non-negative"),
    ([1, 8, 10], "output_shape must be a 1-D tensor of 4 elements"),
])
def test_inconsistent_output_shape_raw_op(out, match):
    # Stock TF answers some of these with an oneDNN abort; ours is a clean error.
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        raw(out=out)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        raw(out=tf.constant(out, tf.int64))


def test_inconsistent_output_shape_is_a_valueerror_when_tracing():
    @tf.function
    def f(x):
        return tu.depthwise_conv2d_transpose(x, W, [1, 9, 10, 3], 2)

    with pytest.raises(ValueError, match="output size 9 is inconsistent"):
        f(tf.constant(X))


def test_unknown_shapes_are_checked_when_the_op_runs():
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32), tf.TensorSpec([None], tf.int32)])
    def f(x, shape):
        return tu.depthwise_conv2d_transpose(x, W, shape, 2)

    with pytest.raises(tf.errors.InvalidArgumentError, match="inconsistent"):
        f(X, tf.constant([1, 9, 10, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input must be 4-D"):
        f(X[0], tf.constant(OUT))
    assert f(X, tf.constant(OUT)).shape == tuple(OUT)


def test_gradient_ops_check_their_sizes():
    dy = np.zeros(OUT, np.float32)
    kw = dict(strides=[2, 2], padding="SAME")
    with pytest.raises(tf.errors.InvalidArgumentError, match="inconsistent"):
        lib.tfupsample_depthwise_conv2d_transpose_backprop_input(dy, W, [1, 6, 5, 3], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_sizes must be non-negative"):
        lib.tfupsample_depthwise_conv2d_transpose_backprop_input(dy, W, [1, -4, 5, 3], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="channel multiplier"):
        lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(X, dy, [4, 4, 3, 2], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="filter_sizes must be a 1-D tensor"):
        lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(X, dy, [4, 4, 3], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of factor 3"):
        lib.tfupsample_bilinear_upsample_grad(dy, factor=3)


def test_weights_arguments():
    with pytest.raises(ValueError, match="number_of_classes"):
        tu.bilinear_upsample_weights(2, 0)
    with pytest.raises(TypeError, match="factor"):
        tu.bilinear_upsample_weights(2.0, 3)
    with pytest.raises(TypeError, match="dtype must be a floating type"):
        tu.bilinear_upsample_weights(2, 3, dtype="int32")
