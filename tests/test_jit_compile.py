"""XLA (``train.jit_compile``) is used where it can compile the train step, and refused quietly where not."""

from __future__ import annotations

import logging

import numpy as np

from roverlite._tf import keras
from roverlite.train.optim import jit_compile_for


def _tiny(interpolation: str) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.UpSampling2D(2, interpolation=interpolation, name=f"up_{interpolation}")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


def test_jit_stays_on_for_a_model_without_nearest_upsampling_and_off_when_not_requested():
    assert jit_compile_for(True, _tiny("bilinear")) is True
    assert jit_compile_for(False, _tiny("bilinear")) is False


def test_nearest_upsampling_trains_without_xla_and_says_so(caplog):
    model = _tiny("nearest")
    with caplog.at_level(logging.INFO, logger="roverlite.train.optim"):
        jit = jit_compile_for(True, model)
    assert jit is False
    assert "up_nearest" in caplog.text
    # With jit_compile=True this step fails on the CPU: no XLA kernel for ResizeNearestNeighborGrad.
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    x = np.random.default_rng(0).random((2, 8, 8, 1), np.float32)
    y = np.zeros((2, 8, 8), np.int32)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
