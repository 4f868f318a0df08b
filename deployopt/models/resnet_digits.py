"""A small ResNet for 32×32 inputs, trained on the UCI 8×8 digits upsampled 4× (real data, no download).

Three stages of one residual block each (widths 24/48/96, strides 1/2/2), the shape of CIFAR ResNets at
a size that trains in about a minute on 2 CPU cores. It exists to show pruning on a residual network:
the skip connections tie channels together, which a dependency graph has to respect.
"""

from __future__ import annotations

import numpy as np

from deployopt.models import DatasetEntry, ModelEntry
from deployopt.models.digits import INPUT_NAME, load_digits_split, shift_augment

SIGNATURE = (f"{INPUT_NAME}:batch,1,32,32:float32",)


def load_digits32_split(split: str = "test", seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The digits split, each 8×8 image upsampled to 32×32 (nearest neighbour, 4× per axis)."""
    inputs, labels = load_digits_split(split, seed)
    images = inputs[INPUT_NAME].repeat(4, axis=2).repeat(4, axis=3)
    return {INPUT_NAME: np.ascontiguousarray(images)}, labels


def ResNetDigits(widths: tuple[int, ...] = (24, 48, 96), num_classes: int = 10):
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
            )
            stages, cin = [], widths[0]
            for index, width in enumerate(widths):
                stages.append(Block(cin, width, 1 if index == 0 else 2))
                cin = width
            self.stages = nn.Sequential(*stages)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))

    return ResNet()


MODELS = [
    ModelEntry(
        name="resnet-digits",
        factory=ResNetDigits,
        signature=SIGNATURE,
        dataset="digits32",
        description="small 3-stage ResNet for 32×32 inputs (digits upsampled 4×)",
        train_epochs=20,
        augment=shift_augment,
    )
]
DATASETS = [
    DatasetEntry(
        name="digits32",
        load=load_digits32_split,
        description="the digits split upsampled to 32×32 (nearest neighbour)",
    )
]
