"""One definition per option (engine.options): the CLI's flags and the app's labels come from it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from engine.cli import main
from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.options import ParamError, flag, label_of, option_fields, parse_text


def _train_parser() -> argparse.ArgumentParser:
    from engine.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["train"]


@pytest.mark.parametrize("cls", [TrainConfig, DataSpec])
def test_every_cli_option_is_a_flag_with_the_settings_default(cls: type) -> None:
    actions = {a.dest: a for a in _train_parser()._actions}
    defaults = cls()
    for f, opt in option_fields(cls):
        if not opt.cli:
            assert f.name not in actions or f.name == "seed"  # the run's --seed sets both
            continue
        a = actions[f.name]
        assert flag(f.name) in a.option_strings
        default = getattr(defaults, f.name)
        if opt.kind == "ints" and default is not None:
            default = ",".join(map(str, default))
        assert a.default == default, f.name
        assert opt.label, f"{cls.__name__}.{f.name} has no form label"


def test_the_parsed_flags_make_the_settings() -> None:
    a = _train_parser().parse_args(
        [
            "--run-dir",
            "r",
            "--widths",
            "8,4",
            "--image-size",
            "8x8",
            "--classes",
            "1,7",
            "--lr",
            "0.3",
        ]
    )
    from engine.commands.training import data_spec_from_args, train_config_from_args

    cfg, data = train_config_from_args(a), data_spec_from_args(a)
    assert cfg == dataclasses.replace(TrainConfig(), widths=[8, 4], lr=0.3)
    assert data.image_size == (8, 8) and data.classes == [1, 7]


def test_an_error_names_the_parameter_three_ways(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as e:
        TrainConfig(batch_size=0).validate()
    assert str(e.value).startswith("batch_size must be a positive integer")  # the library's name
    assert e.value.named(label_of("batch_size")).startswith("Batch size must")  # the app's label
    assert main(["train", "--batch-size", "0", "--run-dir", "unused"]) == 2
    assert "--batch-size must be a positive integer, got 0" in capsys.readouterr().err  # the flag


def test_text_forms_read_or_name_their_option() -> None:
    assert parse_text("widths", "64, 32", "ints") == [64, 32]
    assert parse_text("image_size", "28X28", "size") == (28, 28)
    assert parse_text("classes", " ", "ints") is None
    with pytest.raises(ParamError, match="^widths must be comma-separated integers") as e:
        parse_text("widths", "64,x", "ints")
    assert e.value.param == "widths"
