"""Layer-building helpers for the U-Nets in :mod:`roverlite.train.models`.

Every helper takes a tf_keras tensor and returns one, adding named layers to the functional graph.
Only layers whose int8 TFLite kernels are well supported are used: Conv2D (dilated too),
BatchNormalization (folded into the preceding convolution by the converter and by TFMOT's
Conv-BN-ReLU transforms), ReLU/ReLU6, MaxPooling2D, Concatenate, Add, Conv2DTranspose and
nearest-neighbour UpSampling2D. Bilinear resizing is avoided on purpose: fake-quant training and
int8 kernels disagree on it (see NOTES.md).

Two more are roverlite's pixel-shuffle pair, :class:`SpaceToDepth` and :class:`DepthToSpace`
(the ``shuffle`` stem and decoder): SPACE_TO_DEPTH / DEPTH_TO_SPACE are int8 builtins that XNNPACK
delegates, where nearest resizing is not delegated. TFMOT has no quantize entry for them either, so
their models use post-training int8.

One optional layer is roverlite's own: :class:`CoordinateChannels` (CoordConv) appends the pixel's
row and column, so a convolutional model can learn *where* in the frame a class lives. Its int8
TFLite graph is builtins only (the coordinates fold into a constant at a fixed input size), and
TFMOT and structured pruning prune around it, but TFMOT has no quantize entry for it: QAT refuses
it, so keep it for float teachers (post-training int8 is fine), as the two blocks below.

Two optional blocks use ``Multiply`` (squeeze-and-excitation and attention gates). The int8 TFLite
converter handles MUL, but TFMOT 0.8.1's default 8-bit scheme has no entry for
``keras.layers.Multiply``, so ``quantize_model`` (QAT) refuses models that use them; keep them for
float teachers or post-training quantization.
"""

from __future__ import annotations

from collections.abc import Sequence

from roverlite._tf import keras, tf

layers = keras.layers

NORMS = ("batch", "none")
ACTIVATIONS = ("relu", "relu6", "swish")
DECODERS = ("transpose", "nearest", "shuffle")

# Channel reduction inside squeeze-and-excitation and attention gates (Hu et al. use 16; these
# networks are narrow, so a gentler 4 keeps at least a few channels at width 16).
_REDUCTION = 4


def activation(x, kind: str, name: str):
    """ReLU or ReLU6 as ``keras.layers.ReLU`` (fused into the conv by TFLite), or swish.

    relu: fuses into CONV_2D on every runtime, TFLite-Micro included, and quantizes cleanly.
    relu6: same, with a bounded range that suits int8 (MobileNet convention).
    swish: float-friendly only; in int8 it becomes LOGISTIC + MUL (slower, extra quantization
    error) and is a poor choice for TFLite-Micro.
    """
    if kind == "relu":
        return layers.ReLU(name=name)(x)
    if kind == "relu6":
        return layers.ReLU(max_value=6.0, name=name)(x)
    return layers.Activation("swish", name=name)(x)


def conv_norm_act(
    x,
    filters: int,
    name: str,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    dilation: int = 1,
    norm: str = "batch",
    act: str | None = "relu",
):
    """Conv2D (no bias when a BatchNorm follows and absorbs it) -> BatchNorm -> activation."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation,
        use_bias=norm == "none",
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    if norm == "batch":
        # Momentum 0.9, not Keras' 0.99: the moving statistics must settle within the few hundred
        # steps of a compression fine-tune (and a small-data run); at 0.99, 60 steps leave them
        # about half-way, and inference-mode output is then far worse than training-mode output.
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    if act is not None:
        x = activation(x, act, f"{name}_act")
    return x


def squeeze_excite(x, name: str):
    """Channel gating: global average pool -> 1x1 conv (ReLU) -> 1x1 conv (sigmoid) -> multiply."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(max(1, channels // _REDUCTION), 1, activation="relu", name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def conv_block(
    x,
    filters: int,
    name: str,
    *,
    convs: int = 2,
    norm: str = "batch",
    act: str = "relu",
    residual: bool = False,
    se: bool = False,
):
    """``convs`` 3x3 conv-norm-act layers, optionally as a residual block and with SE.

    The residual form is the ResNet basic block: the last conv has no activation, the shortcut is
    the input (or a 1x1 conv-norm when the channel count changes), and ReLU follows the Add. SE,
    when on, gates the residual branch before the Add (SE-ResNet) or the block output otherwise.
    """
    shortcut = x
    for i in range(convs):
        last = i == convs - 1
        x = conv_norm_act(x, filters, f"{name}_{i + 1}", norm=norm, act=None if (residual and last) else act)
    if se:
        x = squeeze_excite(x, f"{name}_se")
    if not residual:
        return x
    if shortcut.shape[-1] != filters:
        shortcut = conv_norm_act(shortcut, filters, f"{name}_proj", kernel_size=1, norm=norm, act=None)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return activation(x, act, f"{name}_out")


def aspp(x, filters: int, name: str, *, rates: Sequence[int] = (2, 4), norm: str = "batch", act: str = "relu"):
    """Atrous spatial pyramid pooling without the image-pooling branch.

    Parallel 1x1 and dilated 3x3 conv-norm-act branches, concatenated and projected by a 1x1
    conv. DeepLab's image-pooling branch is left out: it needs a broadcast back to the feature
    map (a resize or TILE), which TFLite-Micro and clean int8 export do not like.
    """
    branches = [conv_norm_act(x, filters, f"{name}_b0", kernel_size=1, norm=norm, act=act)]
    for rate in rates:
        branches.append(conv_norm_act(x, filters, f"{name}_r{rate}", dilation=int(rate), norm=norm, act=act))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    return conv_norm_act(x, filters, f"{name}_proj", kernel_size=1, norm=norm, act=act)


def upsample(x, filters: int, name: str, *, decoder: str = "transpose"):
    """Double the spatial size and set the channel count to ``filters``.

    transpose: 2x2 stride-2 Conv2DTranspose (the original U-Net up-convolution; TRANSPOSE_CONV).
    nearest: 1x1 conv at the low resolution, then nearest UpSampling2D (RESIZE_NEAREST_NEIGHBOR).
    A 1x1 conv commutes with nearest upsampling, so running it first gives the same function as
    upsample-then-conv at a quarter of the MACs.
    shuffle: 1x1 conv to ``4 * filters`` channels, then :class:`DepthToSpace` (pixel shuffle,
    DEPTH_TO_SPACE): exactly the function of the 2x2 stride-2 transposed conv, but built from ops
    XNNPACK runs in int8 (TRANSPOSE_CONV is slow there, RESIZE_NEAREST_NEIGHBOR not delegated).
    """
    if decoder == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_tconv")(x)
    if decoder == "shuffle":
        x = layers.Conv2D(4 * filters, 1, name=f"{name}_conv")(x)
        return DepthToSpace(2, name=f"{name}_shuffle")(x)
    x = layers.Conv2D(filters, 1, name=f"{name}_conv")(x)
    return layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_nearest")(x)


def attention_gate(skip, gate, name: str):
    """Additive attention gate (Oktay et al., 2018) on a skip connection.

    ``gate`` is the upsampled decoder tensor at the skip's resolution, so no resampling is needed:
    relu(1x1(skip) + 1x1(gate)) -> 1x1 conv -> sigmoid -> multiply the skip.
    """
    inter = max(1, skip.shape[-1] // _REDUCTION)
    theta = layers.Conv2D(inter, 1, name=f"{name}_theta")(skip)
    phi = layers.Conv2D(inter, 1, name=f"{name}_phi")(gate)
    a = layers.Add(name=f"{name}_add")([theta, phi])
    a = layers.ReLU(name=f"{name}_relu")(a)
    a = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_psi")(a)
    return layers.Multiply(name=f"{name}_scale")([skip, a])


@keras.utils.register_keras_serializable(package="roverlite")
class CoordinateChannels(layers.Layer):
    """Append two channels holding each pixel's row and column, scaled to [-1, 1] (CoordConv).

    Convolutions are translation-equivariant: with zero padding a U-Net can only infer a pixel's
    position in the frame from the borders inside its receptive field. When the camera is fixed
    to the scene's layout (a field robot drives along its crop row, so crops sit in a band of
    columns and weeds anywhere), position is evidence, and these two channels hand it to the first
    convolution (Liu et al., "An intriguing failing of convolutional neural networks and the
    CoordConv solution", NeurIPS 2018). No weights; works at any input size.
    """

    def call(self, x):
        shape = tf.shape(x)
        one_channel = tf.concat([shape[:3], [1]], axis=0)
        rows = tf.broadcast_to(_unit_ramp(shape[1], x.dtype)[None, :, None, None], one_channel)
        cols = tf.broadcast_to(_unit_ramp(shape[2], x.dtype)[None, None, :, None], one_channel)
        return tf.concat([x, rows, cols], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 2,)

    def get_prunable_weights(self):
        """No weights to prune: lets TFMOT's ``prune_low_magnitude`` wrap the layer."""
        return []


class _BlockRearrange(layers.Layer):
    """Shared config of the two pixel-shuffle layers: a block size of 2 or more."""

    def __init__(self, block_size: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
            raise ValueError(f"Expected an integer block_size >= 2. Received: block_size={block_size!r}.")
        self.block_size = block_size

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}

    def get_prunable_weights(self):
        """No weights to prune: lets TFMOT's ``prune_low_magnitude`` wrap the layer."""
        return []


@keras.utils.register_keras_serializable(package="roverlite")
class SpaceToDepth(_BlockRearrange):
    """Fold each ``block x block`` patch into channels (``tf.nn.space_to_depth``; SPACE_TO_DEPTH).

    A half-resolution stem that loses nothing: a 1-channel 128x128 frame becomes 4 channels at
    64x64 and the first convolution sees every pixel (an average-pool stem throws 3 of 4 away).
    Output channel ``(i * block + j) * C + c`` holds input channel ``c`` of patch pixel ``(i, j)``.
    """

    def call(self, x):
        return tf.nn.space_to_depth(x, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        n = self.block_size
        return (b, None if h is None else h // n, None if w is None else w // n, c * n * n)


@keras.utils.register_keras_serializable(package="roverlite")
class DepthToSpace(_BlockRearrange):
    """Unfold channels into ``block x block`` patches (``tf.nn.depth_to_space``; DEPTH_TO_SPACE).

    The inverse of :class:`SpaceToDepth`: a pixel-shuffle up-sampling (Shi et al., 2016) after a
    1x1 conv to ``block**2 * C`` channels, which is the 2x2 stride-2 transposed conv computed
    with ops that int8 XNNPACK delegates.
    """

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        n = self.block_size
        return (b, None if h is None else h * n, None if w is None else w * n, c // (n * n))


def _unit_ramp(n, dtype):
    """``n`` evenly spaced values from -1 to 1 (one value, 0, when ``n`` is 1)."""
    steps = tf.cast(tf.maximum(n - 1, 1), tf.float32)
    ramp = tf.cast(tf.range(n), tf.float32) * (2.0 / steps) - 1.0
    return tf.cast(ramp, dtype)
