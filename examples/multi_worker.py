"""Multi-worker training with tfupsample: `tf.distribute.MultiWorkerMirroredStrategy` and a custom
training loop (Keras 3's `model.fit` fails under this strategy with several workers for stock
layers too -- a Keras limitation -- while a custom loop works).

Each worker runs this script with the same --workers list and its own --index:

    python examples/multi_worker.py --workers localhost:12345,localhost:12346 --index 0 --out w0.npy &
    python examples/multi_worker.py --workers localhost:12345,localhost:12346 --index 1 --out w1.npy

Without --workers it trains in one process on the same global batches, for comparison. It
trains a 1x1 convolution followed by `DepthwiseConv2DTranspose(4, strides=2)` on generated data
and saves the trained weights.
"""

import argparse
import json
import os


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="", help="host:port of every worker, comma-separated")
    p.add_argument("--index", type=int, default=0, help="this worker's position in --workers")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", required=True, help=".npy file for the trained weights")
    args = p.parse_args(argv)
    workers = [w for w in args.workers.split(",") if w]
    if workers:  # before TensorFlow starts: the strategy reads it once
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": args.index}})

    import numpy as np
    import tensorflow as tf

    import tfupsample  # noqa: F401 (registers the ops)
    from tfupsample.keras import DepthwiseConv2DTranspose

    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if workers
                else tf.distribute.OneDeviceStrategy("/cpu:0"))
    global_batch = 8
    rng = np.random.default_rng(0)
    x = rng.standard_normal((global_batch * args.steps, 4, 5, 3)).astype(np.float32)
    y = rng.standard_normal((global_batch * args.steps, 8, 10, 3)).astype(np.float32)

    with strategy.scope():
        tf.keras.utils.set_random_seed(1)  # the same initial weights on every worker
        model = tf.keras.Sequential([tf.keras.Input((4, 5, 3)), tf.keras.layers.Conv2D(3, 1),
                                     DepthwiseConv2DTranspose(4, strides=2)])
        optimizer = tf.keras.optimizers.SGD(0.05)

    # Every worker reads the same global batches; the strategy gives each its share of a batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).with_options(options)
    batches = strategy.experimental_distribute_dataset(data)

    @tf.function
    def step(inputs, targets):
        def replica(inputs, targets):
            with tf.GradientTape() as tape:
                per_example = tf.reduce_mean((model(inputs) - targets) ** 2, axis=[1, 2, 3])
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(replica, (inputs, targets)), axis=None)

    for inputs, targets in batches:
        loss = step(inputs, targets)
    print(f"worker {args.index}: final loss {float(loss):.6f}")
    np.save(args.out, np.concatenate([v.numpy().ravel() for v in model.trainable_variables]))


if __name__ == "__main__":
    main()
