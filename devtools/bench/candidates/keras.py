"""Keras 3 (any backend): ``predict_on_batch`` (the backend-compiled predict function) or a
direct call; on keras-torch also one thread, as for torch.  In bfloat16: the model built in
bfloat16, the input cast once, logits widened to float32."""

from __future__ import annotations

import os

from ports.layouts import nchw_to_nhwc


def candidates(port: str, mod, weights, quick: bool, dtype: str = "float32") -> list:
    model = mod.load(weights, dtype)

    def keras_batch(x):
        xh = mod.feed(model, nchw_to_nhwc(x))
        return lambda: mod.to_numpy(model.predict_on_batch(xh))

    def keras_call(x):
        from keras import ops

        xh = ops.convert_to_tensor(mod.feed(model, nchw_to_nhwc(x)))
        return lambda: mod.to_numpy(model(xh, training=False))

    out = [("predict_on_batch (compiled)", keras_batch),
           ("model(x, training=False)", keras_call)]
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    if port == "keras-torch" and threads > 1:  # as for torch: try one thread too
        import torch

        def with_threads(make, n):
            def wrapped(x):
                run = make(x)

                def run_n():
                    if torch.get_num_threads() != n:
                        torch.set_num_threads(n)
                    return run()
                return run_n
            return wrapped

        out = [(name, with_threads(make, threads)) for name, make in out]
        out.append(("predict_on_batch (compiled), 1 thread", with_threads(keras_batch, 1)))
    return out
