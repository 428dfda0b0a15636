"""training.cli: options are parsed into a checked TrainConfig before any work starts — a choice outside its Literal,
a number outside its range or an unreadable boolean ends as exit status 2 naming the option, with no run folder
written and ``fit`` never called — and every option of every subcommand says what it does."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

pytest.importorskip("torch")  # building the parser imports the export subcommand's options

import training.engine  # noqa: E402
from training.cli import build_parser, config_from_args, main  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def fit_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """``training.engine.fit`` replaced by a recorder: an error must come before training is ever reached."""
    calls: list[tuple] = []
    monkeypatch.setattr(training.engine, "fit", lambda *args, **kwargs: calls.append(args))
    return calls


@pytest.mark.parametrize(
    ("command", "option", "value", "choices"),
    [
        ("fit", "--loss", "hrad", "'pixel', 'hard'"),
        ("fit", "--score", "mean", "'max', 'max_minus_mean', 'topk_mean'"),
        ("fit", "--device", "gpu", "'auto', 'cpu', 'cuda'"),
        ("fit", "--teacher", "resnet50", "'efficientnet_lite0'"),
        ("ablate", "--loss", "hrad", "'pixel', 'hard'"),
        ("evaluate", "--device", "gpu", "'auto', 'cpu', 'cuda'"),
    ],
)
def test_a_choice_outside_its_literal_exits_2_naming_the_option_and_choices_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    fit_calls: list,
    command: str,
    option: str,
    value: str,
    choices: str,
) -> None:
    run = tmp_path / "run"
    where = [str(run)] if command == "evaluate" else ["--data", str(tmp_path / "data"), "--out", str(run)]
    with pytest.raises(SystemExit) as exited:
        main([command, *where, option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: invalid choice: '{value}'" in err and choices in err
    assert not run.exists() and not fit_calls


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "loss=hrad"], "--set loss: loss='hrad': expected one of pixel, hard"),
        (["--epochs", "0"], "--epochs: epochs=0: must be at least 1"),
        (["--holdout-fraction", "1.5"], "--holdout-fraction: holdout_fraction=1.5: must lie in [0, 1)"),
        (
            ["--set", "hard_mining_quantile=1"],
            "--set hard_mining_quantile: hard_mining_quantile=1.0: must lie in (0, 1)",
        ),
        (["--set", "reseed_dead=maybe"], "--set reseed_dead=maybe: expected true or false, got 'maybe'"),
        (["--set", "betas=0.5,1.2"], "--set betas: betas=(0.5, 1.2): must lie in [0, 1)"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_option_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, fit_calls: list, args: list[str], expected: str
) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(tmp_path / "data"), "--out", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not run.exists() and not fit_calls


def test_a_misspelt_boolean_is_refused_rather_than_read_as_false(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fit", "--data", "d", "--out", str(tmp_path / "run"), "--memory-per-category", "fasle"])
    assert exited.value.code == 2
    assert "argument --memory-per-category: invalid boolean value: 'fasle'" in capsys.readouterr().err


def test_an_unknown_ablation_variant_is_refused_listing_the_variants(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["ablate", "--data", "d", "--out", "o", "--variants", "prd,nope"])
    err = capsys.readouterr().err
    assert "argument --variants: unknown nope" in err and "prd_no_memory" in err


def test_options_parse_into_the_typed_config() -> None:
    args = build_parser().parse_args(
        ["fit", "--data", "d", "--out", "o", "--loss", "pixel", "--memory-per-category", "false", "--teacher-taps"]
        + ["2,4,10", "--set", "betas=0.9,0.99", "--set", "reseed_dead=no", "--tile-categories", ""]
    )
    config = config_from_args(args)
    assert (config.loss, config.memory_per_category, config.teacher_taps) == ("pixel", False, [2, 4, 10])
    assert (config.betas, config.reseed_dead, config.tile_categories, config.data) == ((0.9, 0.99), False, [], ["d"])
    untouched = config_from_args(build_parser().parse_args(["fit", "--data", "d", "--out", "o"]))
    assert (untouched.loss, untouched.score, untouched.memory_weight) == ("hard", "max", 4.0)  # the config's


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_subcommand_says_what_it_does_and_lists_its_choices() -> None:
    subcommands = _subcommands()
    assert set(subcommands) == {
        "fit",
        "evaluate",
        "ablate",
        "export",
        "recalibrate",
        "quantize",
        "add-category",
        "synth",
    }
    for name, parser in subcommands.items():
        for action in parser._actions:
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, label
            if action.choices:
                assert "%(choices)s" in action.help or all(c in action.help for c in action.choices), label
        parser.format_help()  # every help string formats (a stray % would raise here)
