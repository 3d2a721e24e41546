"""tf2onnx regression on the registered U-Net presets: ONNX Runtime must reproduce Keras within 1e-4.

tf2onnx's Keras 3 issues are still open upstream (see NOTES.md), so every preset is converted here
at 64x64 with non-trivial BatchNorm statistics (random moving mean/variance, gamma and beta), which
makes BN folding, Conv2DTranspose (or nearest upsampling), the skip concatenations and the
NHWC->NCHW transposes all show up in the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

from roverlite._tf import keras
from roverlite.train.models import create_model

SIZE = 64
ATOL = 1e-4
PRESETS = ["unet_xxs", "unet_nano", "unet_micro", "unet_xs", "unet_s", pytest.param("unet_teacher", marks=pytest.mark.slow)]
# Op types each decoder must produce (and BatchNormalization must not: it is folded).
DECODER_OPS = {"transpose": "ConvTranspose", "nearest": "Resize"}


def _randomise_batchnorm(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                rng.normal(0.0, 0.1, beta.shape).astype(np.float32),
                rng.normal(0.0, 0.1, mean.shape).astype(np.float32),
                rng.uniform(0.5, 2.0, variance.shape).astype(np.float32),
            ])


@pytest.mark.parametrize("preset", PRESETS)
def test_onnx_export_matches_keras_within_1e_4(preset):
    import onnx
    import onnxruntime as ort

    from roverlite.export.onnx import OPSET, keras_to_onnx
    from roverlite.train.models import model_args

    keras.utils.set_random_seed(0)
    model = create_model(preset, input_shape=(SIZE, SIZE, 1), num_classes=4)
    _randomise_batchnorm(model)
    proto = keras_to_onnx(model)

    ops = {node.op_type for node in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert {"Conv", "Concat", "MaxPool", DECODER_OPS[model_args(preset).get("decoder", "transpose")]} <= ops
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, SIZE, SIZE, 1]

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(0.0, 1.0, (2, SIZE, SIZE, 1)).astype(np.float32)
    got = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(2)])
    expected = np.asarray(model(x, training=False))
    assert got.shape == expected.shape == (2, SIZE, SIZE, 4)
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero outputs
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    onnx.checker.check_model(proto)
