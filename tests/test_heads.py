"""Fused heads against the unfused path (our upsample or the dense reference, then stock argmax /
cross-entropy) and numeric gradients."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample._ops import lib
from tfupsample.testing import (ARGMAX_CASES, argmax_logits, assert_argmax_matches_loop, assert_close, bilinear_loop,
                                dense_bilinear, upsample_argmax_loop, upsample_softmax_cross_entropy)

FACTORS = [2, 3, 4, 5, 6, 7, 8, 9, 32]
DTYPES = ["float16", "bfloat16", "float32", "float64"]


def _logits(rng, factor, c=7, dtype="float32"):
    h, w = (3, 5) if factor < 32 else (2, 3)
    return tf.cast(rng.standard_normal((2, h, w, c)) * 3, dtype)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_equals_unfused_bitwise(factor, dtype, rng):
    x = _logits(rng, factor, dtype=dtype)
    up = tu.bilinear_upsample(x, factor)
    labels, scores = tu.upsample_argmax(x, factor, return_scores=True)
    np.testing.assert_array_equal(labels.numpy(), tf.argmax(up, axis=-1).numpy())
    np.testing.assert_array_equal(tf.cast(scores, tf.float64).numpy(),
                                  tf.cast(tf.reduce_max(up, axis=-1), tf.float64).numpy())
    assert labels.dtype == tf.int64 and scores.dtype == x.dtype


def test_argmax_against_the_definition_and_options(rng):
    x = _logits(rng, 4, c=5)
    labels = tu.upsample_argmax(tf.transpose(x, [0, 3, 1, 2]), 4, data_format="NCHW", output_type=tf.int32)
    assert labels.dtype == tf.int32
    # The float64 definition rounds differently; away from near-ties the labels agree.
    expected, _ = upsample_argmax_loop(x.numpy(), 4)
    top2 = np.sort(bilinear_loop(x.numpy(), 4), -1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-4
    assert clear.mean() > 0.9  # the comparison below is not vacuous
    np.testing.assert_array_equal(labels.numpy()[clear], expected[clear])


@pytest.mark.parametrize("classes", [5, 21, 150])
def test_argmax_without_scores_skips_them(classes, rng):
    # with_scores=False (upsample_argmax without return_scores): the same labels, an empty scores
    # output the kernels never write; both semantics.
    x = tf.constant(argmax_logits("segmentation", (2, 5, 6, classes), rng))
    for op, kw in ((lib.tfupsample_upsample_argmax, dict(factor=4)),
                   (lib.tfupsample_resize_argmax, dict(size=[19, 27], half_pixel_centers=True))):
        labels, scores = op(x, with_scores=True, **kw)
        bare, empty = op(x, with_scores=False, **kw)
        assert empty.shape == (0,) and scores.shape == labels.shape
        np.testing.assert_array_equal(bare.numpy(), labels.numpy())
    # return_scores is read for its truth, as before the attribute (numpy bools, ints).
    labels_np, _ = tu.upsample_argmax(x, 4, return_scores=np.True_)
    np.testing.assert_array_equal(tu.upsample_argmax(x, 4, return_scores=0), labels_np)
    ref_labels = tf.argmax(tf.image.resize(x, [19, 27]), -1)
    np.testing.assert_array_equal(tu.upsample_argmax(x, size=(19, 27), interpolation="bilinear"), ref_labels)


ARGMAX_SHAPES = [(2, 3, 5, 7), (1, 4, 3, 21), (2, 2, 2, 150)]


@pytest.mark.parametrize("factor", [2, 3, 5, 8, 32])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "segmentation", "huge"])
def test_argmax_equals_the_definition(factor, dtype, kind, rng):
    # Against upsample_argmax_loop (float64, from the definition; shares nothing with the kernels),
    # not against our own forward: a wrong weight or tap shared by both shows here.
    shape = ARGMAX_SHAPES[factor % len(ARGMAX_SHAPES)]
    if factor == 32:
        shape = (1, 2, 3, shape[-1])
    x = tf.cast(argmax_logits(kind, shape, rng, dtype) if shape[-1] >= 21 else rng.standard_normal(shape) * 3, dtype)
    labels, scores = tu.upsample_argmax(x, factor, return_scores=True)
    assert_argmax_matches_loop(labels, scores, tf.cast(x, tf.float64).numpy(), factor, dtype)
    nchw = tu.upsample_argmax(tf.transpose(x, [0, 3, 1, 2]), factor, data_format="NCHW")
    np.testing.assert_array_equal(nchw.numpy(), labels.numpy())


def test_argmax_ties_go_to_the_lowest_class():
    x = np.zeros((1, 2, 2, 4), np.float32)
    x[..., 1] = x[..., 3] = 1.0
    assert set(np.unique(tu.upsample_argmax(x, 3).numpy())) == {1}


def test_argmax_has_no_gradient(rng):
    x = tf.constant(_logits(rng, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, scores = tu.upsample_argmax(x, 2, return_scores=True)
    # Scores are the argmax op's second output: no gradient flows through the op.
    assert tape.gradient(scores, x) is None


def _labels(rng, x, factor, classes):
    n, h, w = x.shape[0], x.shape[1] * factor, x.shape[2] * factor
    return rng.integers(0, classes, (n, h, w))


@pytest.mark.parametrize("factor", FACTORS)
def test_cross_entropy_and_gradient_match_unfused(factor, rng):
    x = tf.constant(_logits(rng, factor, dtype="float64"))
    labels = _labels(rng, x, factor, 7)
    g = rng.standard_normal(labels.shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ref = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, dense_bilinear(x, factor))
        ours = tu.upsample_sparse_softmax_cross_entropy(labels, x, factor)
        lr, lo = tf.reduce_sum(ref * g), tf.reduce_sum(ours * g)
    assert_close(ours, ref, "float64", "loss")
    assert_close(tape.gradient(lo, x), tape.gradient(lr, x), "float64", "loss_grad")


@pytest.mark.parametrize("factor,shape", [(2, (1, 40, 3, 5)), (4, (2, 19, 2, 70)), (16, (1, 9, 2, 3))], ids=str)
@pytest.mark.parametrize("label_type", ["int64", "int32", "uint8"])  # int32 read as such; uint8 cast to int32
def test_cross_entropy_gradient_over_row_bands(factor, shape, label_type, rng):
    # Tall enough for several row bands, whose shared output rows are reduced once into a buffer.
    x = rng.standard_normal(shape) * 3
    labels = _labels(rng, x, factor, shape[-1]).astype(label_type)
    labels[0, :factor] = 255
    g = rng.standard_normal(labels.shape)
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(labels, xt, factor, ignore_label=255) * g)
    _, expected = upsample_softmax_cross_entropy(x, labels, factor, g, ignore=255)
    assert_close(tape.gradient(loss, xt), expected, "float64", "loss_grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_stats_are_the_softmax_max_and_sum(dtype, rng):
    # The forward's second output, which the gradient takes: per pixel the largest upsampled score
    # (as stored in the dtype) and the sum of exp(score - largest); 0 at the ignore label.
    x = _logits(rng, 3, dtype=dtype)
    labels = _labels(rng, x, 3, 7)
    labels[1, 2:5] = 255
    _, stats, _ = lib.tfupsample_upsample_sparse_softmax_cross_entropy(
        labels, x, factor=3, ignore_label=255, use_ignore_label=True)
    assert stats.dtype == tf.float64 and stats.shape == labels.shape + (2,)
    up = tf.cast(tf.cast(bilinear_loop(tf.cast(x, tf.float64).numpy(), 3), dtype), tf.float64).numpy()
    top = up.max(-1)
    keep = labels != 255
    assert_close(stats[..., 0], np.where(keep, top, 0), dtype, "loss")
    assert_close(stats[..., 1], np.where(keep, np.exp(up - top[..., None]).sum(-1), 0), dtype, "loss")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_cross_entropy_lower_precisions(dtype, rng):
    x = _logits(rng, 4, dtype=dtype)
    labels = _labels(rng, x, 4, 7)
    ref = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tu.bilinear_upsample(tf.cast(x, tf.float64), 4))
    ours = tu.upsample_sparse_softmax_cross_entropy(labels, x, 4)
    assert ours.dtype == x.dtype
    assert_close(ours, ref, dtype, "loss")


def test_cross_entropy_is_stable_for_large_logits(rng):
    x = tf.constant(rng.standard_normal((1, 2, 3, 5)).astype(np.float32) * 1e4)
    labels = _labels(rng, x, 2, 5)
    ours = tu.upsample_sparse_softmax_cross_entropy(labels, x, 2).numpy()
    ref = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tu.bilinear_upsample(x, 2)).numpy()
    assert np.isfinite(ours).all()
    assert_close(ours, ref, "float32", "loss")


def test_ignore_label_gives_zero_loss_and_gradient(rng):
    x = tf.constant(_logits(rng, 3, dtype="float64"))
    labels = _labels(rng, x, 3, 7)
    labels[0, :4, :] = 255
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tu.upsample_sparse_softmax_cross_entropy(labels, x, 3, ignore_label=255)
        total = tf.reduce_sum(loss)
    assert (loss.numpy()[0, :4, :] == 0).all()
    # Reference: the unfused loss with ignored pixels masked out.
    keep = labels != 255
    with tf.GradientTape() as tape2:
        tape2.watch(x)
        ref = tf.nn.sparse_softmax_cross_entropy_with_logits(np.where(keep, labels, 0), tu.bilinear_upsample(x, 3))
        ref_total = tf.reduce_sum(tf.where(keep, ref, 0.0))
    assert_close(loss.numpy()[keep], ref.numpy()[keep], "float64", "loss")
    assert_close(tape.gradient(total, x), tape2.gradient(ref_total, x), "float64", "loss_grad")
    # Every label ignored: loss 0, gradient exactly 0.
    with tf.GradientTape() as tape3:
        tape3.watch(x)
        z = tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(np.full(labels.shape, 255), x, 3, ignore_label=255))
    assert z.numpy() == 0 and not tape3.gradient(z, x).numpy().any()


def test_gradient_numeric(rng):
    labels = rng.integers(0, 4, (1, 6, 4))
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: tu.upsample_sparse_softmax_cross_entropy(labels, t, 2), [rng.standard_normal((1, 3, 2, 4))])
    assert_close(theoretical[0], numerical[0], "float64", "jacobian")


def test_labels_out_of_range_are_an_error(rng):
    x = _logits(rng, 2)
    labels = _labels(rng, x, 2, 7)
    for bad, label_type in ((7, np.int64), (-1, np.int64), (255, np.int64), (7, np.int32), (-1, np.int32)):
        labels[0, 1, 1] = bad
        # On the CPU (a GPU gives NaN there instead, as TF's own kernel does).
        with tf.device("/CPU:0"), pytest.raises(
                tf.errors.InvalidArgumentError, match=f"labels must be in \\[0, 7\\).*got {bad}"):
            tu.upsample_sparse_softmax_cross_entropy(labels.astype(label_type), x, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must have shape"):
        lib.tfupsample_upsample_sparse_softmax_cross_entropy(np.zeros((2, 5, 5), np.int64), x, factor=2)
    grad = lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad
    stats = np.zeros((2, 6, 10, 2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="loss_grad must have shape"):
        grad(np.zeros((2, 6, 10), np.int64), x, stats, np.zeros((2, 6, 9), np.float32), factor=2)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"stats must have shape \[2,6,10,2\] \(the forward's second output\), got \[2,6,10\]"):
        grad(np.zeros((2, 6, 10), np.int64), x, stats[..., 0], np.zeros((2, 6, 10), np.float32), factor=2)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        tu.upsample_sparse_softmax_cross_entropy(labels.astype(np.float32), x, 2)
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        tu.upsample_argmax(x, 0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="logits must be 4-D"):
        lib.tfupsample_upsample_argmax(np.zeros((3, 3, 3), np.float32), factor=2)


@pytest.mark.parametrize("factor", [2, 3])
def test_heads_under_xla(factor, rng, xla_path):
    x = tf.constant(_logits(rng, factor))
    labels = tf.constant(_labels(rng, x, factor, 7), tf.int32 if factor == 3 else tf.int64)  # both label widths

    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(labels, t, factor, ignore_label=3))
        return tu.upsample_argmax(t, factor), loss, tape.gradient(loss, t)

    a = tf.function(step, jit_compile=True)(x)
    b = step(x)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert_close(a[1], b[1], "float32", "loss")
    assert_close(a[2], b[2], "float32", "loss_grad")
    # The stock-op lowering against the float64 definitions too (not only against the kernels).
    x64, y = x.numpy().astype(np.float64), labels.numpy()
    assert_argmax_matches_loop(a[0], None, x64, factor, "float32")
    loss, grad = upsample_softmax_cross_entropy(x64, y, factor, np.ones(y.shape), ignore=3)
    assert_close(a[1], loss.sum(), "float32", "loss")
    assert_close(a[2], grad, "float32", "loss_grad")


def test_keras_loss_trains_a_model(rng):
    import keras

    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    keras.utils.set_random_seed(7)  # the initial weights too: "the loss falls" is then repeatable
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 1)(inputs))
    loss = UpsampledSparseCategoricalCrossentropy(4, ignore_class=255)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    x = rng.standard_normal((8, 4, 4, 3)).astype(np.float32)
    y = rng.integers(0, 5, (8, 16, 16))
    y[:, :8, :] = 255
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The reported loss is Keras' own loss on the upsampled logits: ignored pixels out of the mean.
    stock = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    expected = stock(y, dense_bilinear(model(x), 4))
    assert_close(model.evaluate(x, y, verbose=0), expected, "float32", "loss")
    restored = UpsampledSparseCategoricalCrossentropy.from_config(loss.get_config())
    assert (restored.factor, restored.ignore_class) == (4, 255)
    with pytest.raises(ValueError, match="from_logits=True"):
        UpsampledSparseCategoricalCrossentropy(4, from_logits=False)


@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("weights", [None, "per_image", "per_pixel"])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_keras_loss_equals_keras_on_the_upsampled_logits(ignore, weights, reduction, rng):
    import keras

    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    logits = tf.constant(rng.standard_normal((4, 3, 5, 6)) * 2, tf.float32)
    y = rng.integers(0, 6, (4, 12, 20))
    if ignore is not None:
        y[:, :6] = ignore  # half of every image
        y[3] = ignore  # and one image entirely
    sw = {None: None, "per_image": rng.uniform(0.5, 2, (4, 1, 1)),
          "per_pixel": rng.uniform(0, 2, (4, 12, 20))}[weights]
    ours = UpsampledSparseCategoricalCrossentropy(4, ignore_class=ignore, reduction=reduction)
    stock = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore,
                                                       reduction=reduction)
    up = dense_bilinear(logits, 4)  # the reference upsample (the formula's weights)
    assert_close(ours(y, logits, sample_weight=sw), stock(y, up, sample_weight=sw), "float32", "loss")


def test_keras_loss_takes_ignore_label_as_another_name():
    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    assert UpsampledSparseCategoricalCrossentropy(2, ignore_label=7).ignore_class == 7
    with pytest.raises(ValueError, match="pass one"):
        UpsampledSparseCategoricalCrossentropy(2, ignore_class=3, ignore_label=7)


@pytest.mark.parametrize("factor", [2, 3, 5, 8, 16, 32])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ARGMAX_CASES)
def test_pruned_argmax_equals_unfused_bitwise(factor, dtype, kind, rng):
    # The pruned argmax against tf.argmax / reduce_max of our (unfused) upsample, bit for bit,
    # on the logits that stress the pruning: near and exact ties (the lowest class must win),
    # huge magnitudes (the rounding margin scales), inf / NaN (pruning off there).
    shape = (1, 3, 4, 40) if factor >= 16 else (2, 5, 6, 40)
    x = argmax_logits(kind, shape, rng, dtype)
    xt = tf.cast(x, dtype)
    up = tu.bilinear_upsample(xt, factor)
    labels, scores = tu.upsample_argmax(xt, factor, return_scores=True)
    np.testing.assert_array_equal(labels.numpy(), tf.argmax(up, axis=-1).numpy())
    # The score is the upsampled logit at the label (with NaN about, tf.reduce_max's NaN
    # propagation differs between its own float16 and float32 kernels).
    at_label = np.take_along_axis(tf.cast(up, tf.float64).numpy(), labels.numpy()[..., None], -1)[..., 0]
    np.testing.assert_array_equal(tf.cast(scores, tf.float64).numpy(), at_label)
