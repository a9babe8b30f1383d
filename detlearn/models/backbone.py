"""A small convolutional backbone and the helpers every model shares.

The backbone is a plain stack of 3x3 conv-BN-ReLU layers with 2x2 max pooling
between them. Stage 0 runs at full resolution and every later stage first
halves it, so stage ``k`` has stride ``2 ** k``: with the default five stages a
96 x 96 image gives maps of 96, 48, 24, 12 and 6 pixels (strides 1 to 16).
``Backbone(out_strides=(8, 16))`` returns the maps at strides 8 and 16, which is
what the detector uses; the classifier asks for the last one only.

Why max pooling rather than strided convolutions: on ShapesDataset a net that
downsamples with stride-2 convolutions sits for hundreds of steps at chance
accuracy, while the same budget with max pooling learns the shapes in about a
hundred steps. Max pooling keeps the strongest edge response wherever it falls,
so a shape looks the same to the next layer after a one-pixel shift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from detlearn import _checks

__all__ = [
    "Backbone",
    "ConfiguredModule",
    "check_targets",
    "conv_bn_relu",
    "set_fields",
    "to_batch",
]


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias) -> BatchNorm -> ReLU; keeps ``H x W``.

    ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """Conv stages with max pooling between them; returns the maps at ``out_strides``.

    Args:
        widths: channels of each stage. Stage 0 is one conv-BN-ReLU at full
            resolution; stage ``k >= 1`` is a 2x2 max pool then one conv-BN-ReLU,
            so it has stride ``2 ** k``.
        out_strides: strides of the maps ``forward`` returns, increasing; each
            must be a stage's stride.

    ``forward(x)``: ``x`` float ``[B, 3, H, W]`` -> list of ``[B, C_l, H_l, W_l]``,
    one per entry of ``out_strides``, with ``C_l`` in ``self.out_channels`` and
    ``H_l = H // stride_l`` (see :meth:`feature_size`).
    """

    def __init__(
        self,
        widths: Sequence[int] = (8, 16, 32, 64, 64),
        out_strides: Sequence[int] = (16,),
    ) -> None:
        super().__init__()
        stage_strides = [2**k for k in range(len(widths))]
        if not out_strides or any(s not in stage_strides for s in out_strides):
            raise ValueError(
                f"out_strides must be taken from {stage_strides}, got {out_strides}"
            )
        if list(out_strides) != sorted(set(out_strides)):
            raise ValueError(f"out_strides must be increasing, got {out_strides}")
        self.out_strides = tuple(int(s) for s in out_strides)
        self.out_channels = tuple(
            widths[stage_strides.index(s)] for s in self.out_strides
        )
        stages = [conv_bn_relu(3, widths[0])]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            stages.append(nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(c_in, c_out)))
        # stages past the last requested stride are never run, so they are not built
        self.stages = nn.ModuleList(
            stages[: stage_strides.index(self.out_strides[-1]) + 1]
        )
        self.stage_strides = tuple(stage_strides[: len(self.stages)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.stage_maps(x)
        return [maps[stride] for stride in self.out_strides]

    def stage_maps(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every built stage's map by its stride: ``{1: [B, C_0, H, W], 2: ...}``."""
        maps = {}
        for stride, stage in zip(self.stage_strides, self.stages, strict=True):
            x = stage(x)
            maps[stride] = x
        return maps

    @staticmethod
    def feature_size(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
        """``(H_l, W_l)`` of the map at ``stride`` for an image of ``(H, W)`` pixels.

        Each 2x2 max pool maps ``n`` pixels to ``n // 2``; repeated, that is
        ``n // stride``.
        """
        h, w = image_size
        return int(h) // stride, int(w) // stride


def to_batch(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Images as one float tensor ``[B, 3, H, W]``.

    Accepts a ``[B, 3, H, W]`` tensor or a list of ``[3, H, W]`` tensors of one size
    (torchvision's detection models take lists). The detectors take images of
    different sizes too: they batch them with
    :func:`detlearn.models.transform.resize_and_pad` instead.
    """
    images = _checks.images(images)
    if isinstance(images, torch.Tensor):
        return images
    if len({tuple(image.shape) for image in images}) > 1:
        raise ValueError("images in one batch must share one size (H, W)")
    return torch.stack(images)


def check_targets(
    targets: Sequence[dict[str, torch.Tensor]] | None,
    batch_size: int,
    keys: Sequence[str],
    device: torch.device,
) -> list[dict[str, torch.Tensor]]:
    """Targets for a training step: one dict per image, holding ``keys``, on ``device``.

    The checks are :func:`detlearn._checks.targets` (finite xyxy ``boxes``, one
    integer label per box), run where the targets are, before they move: the
    model's training step trusts what this returns.
    """
    checked = _checks.targets(targets, batch_size, keys)
    return [{k: v.to(device) for k, v in t.items()} for t in checked]


def set_fields(config: Any, **values: Any) -> None:
    """Store checked values on a frozen dataclass (for its ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(config, name, value)


class ConfiguredModule(nn.Module):
    """A model whose settings live in one frozen dataclass, ``model.config``.

    ``Model(num_classes, **settings)`` builds ``config_class(num_classes,
    **settings)``, which validates them; ``Model(config=config)`` takes a config
    as it is. Each setting also reads as an attribute: ``model.nms_thresh`` is
    ``model.config.nms_thresh``. Assigning one (``model.voting_thresh = 0.7``)
    replaces the config with a validated copy, so a checkpoint saves what the
    model uses; the settings in ``layer_settings`` built the layers and cannot
    change (build a new model instead).
    """

    config_class: ClassVar[type]
    layer_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_classes: int | None = None, config: Any = None, **settings):
        super().__init__()
        if config is None:
            config = self.config_class(num_classes, **settings)
        elif num_classes is not None or settings:
            raise ValueError("pass either config or num_classes and settings, not both")
        elif not isinstance(config, self.config_class):
            expected, got = self.config_class.__name__, type(config).__name__
            raise ValueError(f"config must be a {expected}, got {got}")
        self.config = config

    def __getattr__(self, name: str) -> Any:
        config = self.__dict__.get("config")
        if config is not None and name in config.__dataclass_fields__:
            return getattr(config, name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        config = self.__dict__.get("config")
        if config is not None and name in config.__dataclass_fields__:
            if name in self.layer_settings:
                raise AttributeError(
                    f"{name} built the layers; build a new model to change it"
                )
            name, value = "config", dataclasses.replace(config, **{name: value})
        super().__setattr__(name, value)
