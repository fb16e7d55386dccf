"""plumbing.args, plumbing.files and scratch.cli: the argument types, the optimizer flags of
every training command line, and the atomic writes."""
import argparse
import json
import os

import pytest

from plumbing import args, files
from scratch import cli

TYPES = {  # type: (accepted text -> value, refused texts, the wording)
    args.positive_int: ({"1": 1, "128": 128}, ["0", "-3", "1.5", "many"], "a positive integer"),
    args.nonnegative_int: ({"0": 0, "7": 7}, ["-1", "2.0", "x"], "an integer >= 0"),
    args.positive_float: ({"0.1": 0.1, "1e-5": 1e-5, "3": 3.0}, ["0", "-0.1", "x"],
                         "a positive number"),
    args.nonnegative_float: ({"0": 0.0, "2.5": 2.5}, ["-1e-9", "x"], "a number >= 0"),
    args.fraction: ({"0": 0.0, "0.1": 0.1, "0.999": 0.999}, ["1", "1.5", "-0.1"],
                   "a number in [0, 1)"),
}
NOT_FINITE = ["nan", "inf", "-inf", "NaN", "Infinity"]


@pytest.mark.parametrize("kind", TYPES, ids=lambda kind: kind.__name__)
def test_types_accept_valid_values(kind):
    for text, value in TYPES[kind][0].items():
        assert kind(text) == value and type(kind(text)) is type(value)


@pytest.mark.parametrize("kind", TYPES, ids=lambda kind: kind.__name__)
def test_types_refuse_nan_inf_and_out_of_range_in_one_wording(kind):
    _, refused, wanted = TYPES[kind]
    for text in [*refused, *NOT_FINITE]:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            kind(text)
        assert str(info.value) == f"must be {wanted}, got {text!r}"


def test_bounded_types_name_their_limit():
    assert args.epoch_count(str(args.MAX_EPOCHS)) == args.MAX_EPOCHS
    assert args.seed_number(str(2**32 - 1)) == 2**32 - 1
    for kind, text, wanted in [(args.epoch_count, "100000000000000000000", "at most 10,000"),
                               (args.seed_number, str(2**32), "at most 4,294,967,295"),
                               (args.epoch_count, "0", "a positive integer"),
                               (args.seed_number, "nan", "an integer >= 0")]:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            kind(text)
        assert str(info.value) == f"must be {wanted}, got {text!r}"


def test_model_name_counts_a_model_too_big_to_build_without_building_it():
    assert cli.model_name("fc128") == "fc128" and cli.model_name("convnet") == "convnet"
    huge = "fc100000000000"  # 795 n + 10 parameters: 570 TiB of float64 weights
    with pytest.raises(argparse.ArgumentTypeError, match="79,500,000,000,010 parameters"):
        cli.model_name(huge)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown model 'nosuchnet'"):
        cli.model_name("nosuchnet")


def test_path_types_refuse_what_cannot_be_written_or_read(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    refused = [
        (args.output_file, "folder", "'{}' is a folder, expected a file name"),
        (args.output_file, "file.txt/run.json", "'{}' is a file, not a folder"),
        (args.output_folder, "file.txt", "'{}' is a file, expected a folder"),
        (args.output_folder, "file.txt/sub", "'{}' is a file, not a folder"),
        (args.figure_file, "plot.txt", "'{}': expected a name ending in .png, .pdf or .svg"),
        (args.figure_file, "folder", "'{}' is a folder, expected a file name"),
        (args.input_file, "folder", "'{}' is a folder, expected a file"),
        (args.input_file, "missing.json", "'{}': no such file"),
    ]
    for kind, name, message in refused:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            kind(str(tmp_path / name))
        named = tmp_path / ("file.txt" if "is a file, not" in message else name)
        assert str(info.value) == message.format(named), (kind.__name__, name)
    # what will be made: missing folders are fine
    assert args.output_file(str(tmp_path / "new" / "run.json")) == tmp_path / "new" / "run.json"
    assert args.output_folder(str(tmp_path / "new" / "logs")) == tmp_path / "new" / "logs"
    assert args.figure_file(str(tmp_path / "plot.PDF")) == tmp_path / "plot.PDF"
    assert args.input_file(str(tmp_path / "file.txt")) == tmp_path / "file.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder"]  # none made


def test_path_types_try_the_write_and_leave_nothing_behind(tmp_path):
    """A folder is tried by making it and a file in it: what root may not write either (a
    pseudo file system) is refused, and every folder and file the try made is gone."""
    for kind in (args.output_file, args.figure_file):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            kind("/proc/twinnet-no-such-folder/deeper/out.png")
        assert str(info.value) == ("cannot make the folder '/proc/twinnet-no-such-folder' "
                                   "(No such file or directory)")
    with pytest.raises(argparse.ArgumentTypeError, match="^cannot write in '/proc' "):
        args.output_folder("/proc")
    assert args.output_folder(str(tmp_path / "a" / "b" / "c")) == tmp_path / "a" / "b" / "c"
    assert args.output_file(str(tmp_path / "x.json")) == tmp_path / "x.json"
    assert list(tmp_path.iterdir()) == []


def test_a_refused_value_is_one_line_naming_the_flag(capsys):
    parser = argparse.ArgumentParser(prog="prog")
    cli.add_optimizer_args(parser)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--lr", "nan"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        "prog: error: argument --lr: must be a positive number, got 'nan'"


def test_write_json_is_indented_with_a_final_newline_and_creates_the_folder(tmp_path):
    path = tmp_path / "new" / "report.json"
    files.write_json(path, {"b": [1, 2.5], "a": None})
    assert path.read_text() == '{\n  "b": [\n    1,\n    2.5\n  ],\n  "a": null\n}\n'
    assert os.listdir(path.parent) == ["report.json"]  # no temporary file left behind


def test_atomic_write_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "weights.bin"
    files.atomic_write(path, lambda f: f.write(b"\x00\x01"))
    assert path.read_bytes() == b"\x00\x01" and os.listdir(path.parent) == ["weights.bin"]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "report.json"
    files.write_json(path, {"epoch": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"epoch": object()})  # not JSON: fails before anything is written

    def half_then_crash(f):
        f.write(b'{"epoch": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["report.json"]


# --- the optimizer flags on every command line that trains (argparse only, no training) ---


def scratch_train_args(argv):
    from comparison import scratch_train

    return scratch_train.parse_args(["--model", "fc16", "--epochs", "1", *argv])


def keras_train_args(argv):
    from keras_impl import train_cli

    return train_cli.parse_args(["--model", "fc16", *argv])


def compare_args(argv):
    import compare

    return compare.parse_args(["--model", "fc16", *argv])


def experiments_args(argv):
    from comparison.experiments import __main__ as experiments

    parser = experiments.build_parser()
    args = parser.parse_args(["epochs", *argv])
    cli.check_optimizer_args(parser, args)
    return args


TRAINING_CLIS = [scratch_train_args, keras_train_args, compare_args, experiments_args]


@pytest.mark.parametrize("parse", TRAINING_CLIS, ids=lambda parse: parse.__name__)
def test_every_training_command_line_takes_the_optimizer_flags(parse):
    args = parse(["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--nesterov"])
    assert (args.optimizer, args.lr, args.momentum, args.nesterov) == ("sgd", 0.05, 0.9, True)
    args = parse([])
    assert (args.optimizer, args.momentum, args.nesterov) == ("adam", 0.0, False)


@pytest.mark.parametrize("parse", TRAINING_CLIS, ids=lambda parse: parse.__name__)
@pytest.mark.parametrize("argv, message", [
    (["--momentum", "0.9"], "--momentum and --nesterov apply to --optimizer sgd only"),
    (["--optimizer", "sgd", "--nesterov"], "--nesterov needs --momentum > 0"),
    (["--momentum", "1"], "argument --momentum: must be a number in [0, 1), got '1'"),
    (["--lr", "inf"], "argument --lr: must be a positive number, got 'inf'"),
])
def test_every_training_command_line_refuses_alike(parse, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
