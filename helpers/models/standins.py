"""The stand-in networks trained here: three ImageNet architectures at Fashion-MNIST scale.

Each takes 1 x 28 x 28 images, has 10 classes and keeps its original's module
names, so one layer table serves the stand-in and the original:
:class:`MiniAlexNet` (AlexNet's ``features``/``classifier``), :class:`MiniResNet`
(ResNet-18: stem, four stages of two torchvision ``BasicBlock``, ``fc``) and
:class:`MiniViT` (a torchvision ``VisionTransformer`` with a 1-channel patch
projection: vit_b_16's ``conv_proj``, ``encoder.layers.encoder_layer_{i}``,
``encoder.ln``, ``heads.head``). Each is sized to train for 2 epochs in about
two minutes on a 2-core CPU (see :mod:`helpers.models.training`).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.models.vision_transformer import VisionTransformer


class MiniAlexNet(nn.Module):
    """AlexNet at Fashion-MNIST scale (1 x 28 x 28 input, 10 classes).

    ============  ==================  ===========
    layer         parameters          output
    ============  ==================  ===========
    conv1         k=5, s=1, p=2       24 x 28 x 28
    max-pool      k=3, s=2, p=1       24 x 14 x 14
    conv2         k=3, s=1, p=1       48 x 14 x 14
    max-pool      k=3, s=2, p=1       48 x 7 x 7
    conv3         k=3, s=1, p=1       64 x 7 x 7
    conv4         k=3, s=1, p=1       48 x 7 x 7
    conv5         k=3, s=1, p=1       48 x 7 x 7
    max-pool      k=3, s=2, p=0       48 x 3 x 3
    fc1, fc2      dropout 0.3         256
    fc3                               10
    ============  ==================  ===========
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 24, 5, 1, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(24, 48, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(48, 64, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 48, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(48, 48, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(48 * 3 * 3, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, 256), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class MiniResNet(nn.Module):
    """ResNet-18 at Fashion-MNIST scale (1 x 28 x 28 input, 10 classes).

    Output shapes for the default ``widths=(8, 16, 32, 64)`` (2.0 M multiply-adds
    per image, 176 k parameters; twice as wide trains 2.5 times longer for
    under one point of test accuracy):

    ============  =====================================  ===========
    layer         parameters                             output
    ============  =====================================  ===========
    conv1         k=3, s=1, p=1, no bias; bn1, relu      8 x 28 x 28
    maxpool       k=3, s=2, p=1                          8 x 14 x 14
    layer1        2 BasicBlock                           8 x 14 x 14
    layer2        2 BasicBlock, first s=2 + downsample   16 x 7 x 7
    layer3        2 BasicBlock, first s=2 + downsample   32 x 4 x 4
    layer4        2 BasicBlock, first s=2 + downsample   64 x 2 x 2
    avgpool       adaptive, 1 x 1; flatten               64
    fc                                                   10
    ============  =====================================  ===========

    Each BasicBlock is conv1-bn1-relu-conv2-bn2 (3 x 3) plus the identity or
    ``downsample`` (1 x 1 conv, stride 2, and batch norm), then relu.
    Initialised as torchvision's ResNet (Kaiming normal, fan-out, for convs;
    batch-norm weight 1, bias 0).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(8, 16, 32, 64)):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], 1)
        self.layer2 = self._make_layer(widths[1], 2)
        self.layer3 = self._make_layer(widths[2], 2)
        self.layer4 = self._make_layer(widths[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        first = BasicBlock(self.inplanes, planes, stride, downsample)
        self.inplanes = planes
        return nn.Sequential(first, BasicBlock(planes, planes))

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class MiniViT(VisionTransformer):
    """ViT-B/16 at Fashion-MNIST scale (1 x 28 x 28 input, 10 classes).

    Output shapes for the defaults (patch 7, 4 layers, 4 heads, width 128, MLP
    256; 9.3 M multiply-adds per image, 540 k parameters):

    ======================  ==============================  ===========
    layer                   parameters                      output
    ======================  ==============================  ===========
    conv_proj               k=7, s=7, 1 -> 128 channels     128 x 4 x 4
    class token, patches    + position embedding            17 x 128
    encoder_layer_{0..3}    attention (4 heads), MLP 256    17 x 128
    encoder.ln              layer norm                      17 x 128
    heads.head              class token (position 0)        10
    ======================  ==============================  ===========

    ``encoder_layer_{i}`` is ``encoder.layers.encoder_layer_{i}``: pre-norm
    ``self_attention`` and ``mlp`` (``mlp.3`` its last linear layer), each
    with a residual. Torchvision's ``VisionTransformer`` with ``conv_proj``
    taking ``in_channels`` (initialised as torchvision does: truncated normal,
    std ``sqrt(1 / fan_in)``, zero bias); everything else is torchvision's.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 patch_size: int = 7, num_layers: int = 4, num_heads: int = 4, hidden_dim: int = 128,
                 mlp_dim: int = 256, dropout: float = 0.0, attention_dropout: float = 0.0):
        super().__init__(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                         num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout,
                         attention_dropout=attention_dropout, num_classes=num_classes)
        self.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
