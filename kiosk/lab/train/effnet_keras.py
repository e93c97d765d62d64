"""Hand-written Keras EfficientNet-Lite0 that takes its weights from the PyTorch model.

Batch norm is folded into the preceding convolution when porting (the graph holds plain
conv + bias + ReLU6, which is also what the TFLite converter would make). The Keras model has
three outputs, in this order: ``logits`` (N, C), ``features`` (N, 1280) pooled penultimate
features, and ``cam`` (N, h, w, C): the classifier weights applied as a 1x1 convolution to the
last feature map, without bias, so ``mean(cam) + bias == logit`` for every finding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kiosk.lab.train.effnet_torch import BN_EPS, FEATURE_DIM, block_args

logger = logging.getLogger(__name__)


def _fold(state: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``bn`` into ``conv``: returns the torch-layout weight and a bias."""
    w = state[f"{conv}.weight"]
    gamma, beta = state[f"{bn}.weight"], state[f"{bn}.bias"]
    mean, var = state[f"{bn}.running_mean"], state[f"{bn}.running_var"]
    scale = gamma / np.sqrt(var + BN_EPS)
    return w * scale[:, None, None, None], beta - mean * scale


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _dw_kernel(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def build_keras(state: dict[str, np.ndarray], image_size: int = 224) -> Any:
    """Build the Keras model from a PyTorch ``state_dict`` (numpy arrays, float32)."""
    import keras
    from keras import layers

    num_classes = int(state["_fc.weight"].shape[0])
    inp = keras.Input((image_size, image_size, 3), batch_size=1, name="image")
    loads: list[tuple[Any, list[np.ndarray]]] = []

    def conv(x: Any, conv_name: str, bn_name: str, stride: int, relu: bool) -> Any:
        w, b = _fold(state, conv_name, bn_name)
        k = w.shape[-1]
        layer = layers.Conv2D(w.shape[0], k, strides=stride, padding="same", use_bias=True)
        y = layer(x)
        loads.append((layer, [_conv_kernel(w), b]))
        return layers.ReLU(max_value=6.0)(y) if relu else y

    def dwconv(x: Any, conv_name: str, bn_name: str, stride: int) -> Any:
        w, b = _fold(state, conv_name, bn_name)
        layer = layers.DepthwiseConv2D(w.shape[-1], strides=stride, padding="same", use_bias=True)
        y = layer(x)
        loads.append((layer, [_dw_kernel(w), b]))
        return layers.ReLU(max_value=6.0)(y)

    x = conv(inp, "_conv_stem", "_bn0", 2, True)
    for i, args in enumerate(block_args()):
        p = f"_blocks.{i}"
        y = x
        if args.expand != 1:
            y = conv(y, f"{p}._expand_conv", f"{p}._bn0", 1, True)
        y = dwconv(y, f"{p}._depthwise_conv", f"{p}._bn1", args.stride)
        y = conv(y, f"{p}._project_conv", f"{p}._bn2", 1, False)
        if args.stride == 1 and args.in_ch == args.out_ch:
            y = layers.Add()([x, y])
        x = y
    fmap = conv(x, "_conv_head", "_bn1", 1, True)

    features = layers.GlobalAveragePooling2D(name="features")(fmap)
    fc = layers.Dense(num_classes, name="logits")
    logits = fc(features)
    cam_layer = layers.Conv2D(num_classes, 1, use_bias=False, name="cam")
    cam = cam_layer(fmap)
    fc_w, fc_b = state["_fc.weight"], state["_fc.bias"]
    loads.append((fc, [fc_w.T.copy(), fc_b]))
    loads.append((cam_layer, [fc_w.T.reshape(1, 1, FEATURE_DIM, num_classes).copy()]))

    model = keras.Model(inp, [logits, features, cam], name="effnet_lite0")
    for layer, weights in loads:
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in weights])
    logger.info("built Keras Lite0: %d classes, %d px", num_classes, image_size)
    return model


def torch_state_to_numpy(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` as float32 numpy arrays (drops the batch counters)."""
    return {
        k: v.detach().cpu().numpy().astype(np.float32)
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
