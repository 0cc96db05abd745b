import subprocess
import sys

from bpbreid.__main__ import COMMANDS, available_commands, main


def test_help_lists_available_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in available_commands():
        assert name in out
    assert "demo" in out and "config" in out


def test_registry_modules_provide_the_cli_contract():
    import importlib

    for name, (module_name, _) in available_commands().items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments), name
        assert callable(module.run), name
    assert set(available_commands()) <= set(COMMANDS)


def test_config_command_prints_yaml_and_diff(capsys):
    assert main(["config", "train.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert main(["config", "--diff", "train.lr=0.5"]) == 0
    assert "train.lr" in capsys.readouterr().out


def test_user_errors_print_a_message_not_a_traceback(capsys):
    assert main(["config", "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'train.bogus'" in err and "Traceback" not in err


def test_overrides_may_follow_flags(capsys):
    # argparse ends a positional list at the first flag; later key=value tokens still count.
    assert main(["config", "synthetic_cpu", "--diff", "train.lr=0.25"]) == 0
    assert "train.lr" in capsys.readouterr().out
    assert main(["train", "--config", "synthetic_cpu", "--out", "o", "train.lr=-1"]) == 2
    assert "train.lr=-1.0 is invalid" in capsys.readouterr().err
    try:
        main(["train", "--config", "synthetic_cpu", "--out", "o", "--bogus"])
    except SystemExit as exc:  # argparse: a stray flag is still a usage error
        assert exc.code == 2
    else:
        raise AssertionError("--bogus was accepted")
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "bpbreid", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "<command>" in result.stdout


# --------------------------------------------------------------------------------------
# One command layer: shared flags, hidden former spellings, nothing heavy for --help
# --------------------------------------------------------------------------------------


def _parse(argv):
    from bpbreid.__main__ import build_parser

    return build_parser(argv[:1]).parse_args(argv)


def _help(name):
    from bpbreid.__main__ import build_parser

    parser = build_parser([name])
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    return sub.format_help()


def test_shared_flags_have_one_spelling_and_one_default():
    argv = {
        "train": ["train", "--config", "synthetic_cpu"],
        "eval": ["eval", "--checkpoint", "m.pth"],
        "visualize": ["visualize", "--checkpoint", "m.pth"],
        "infer": ["infer", "--checkpoint", "m.pth", "--query", "q", "--gallery", "g"],
        "export": ["export", "--checkpoint", "m.pth", "--out", "m.onnx"],
        "demo": ["demo"],
        "labels": ["labels", "images"],
    }
    from bpbreid.cli.common import device_from_args

    for name, args in argv.items():
        parsed = _parse(args)
        assert device_from_args(parsed) == "auto", name  # also without a --device flag
        if name != "export":  # no progress bar to hide
            assert parsed.no_progress is False, name
        if name != "labels":
            assert parsed.overrides == [], name
            assert "--config" in _help(name), name
    for name in ("eval", "visualize", "infer", "export"):
        parsed = _parse([*argv[name], "--no-strict", "test.flip=true"])
        assert parsed.checkpoint == "m.pth" and parsed.no_strict is True
        assert parsed.overrides == ["test.flip=true"]
        if name != "export":  # exported on the CPU, always
            assert _parse([*argv[name], "--device", "cpu"]).device == "cpu"


def test_former_spellings_still_parse_and_stay_out_of_help():
    assert _parse(["train", "--config", "x", "--output-dir", "o1"]).out == "o1"
    assert _parse(["train", "-c", "x", "-o", "o2"]).out == "o2"
    assert _parse(["train", "-c", "x"]).config == "x"
    assert _parse(["train", "--config", "x", "--out", "o3"]).out == "o3"
    assert _parse(["visualize", "-k", "m.pth", "--output", "figs"]).out == "figs"
    assert _parse(["visualize", "--checkpoint", "m.pth"]).out is None
    assert _parse(["demo", "--output-dir", "d"]).out == "d"
    assert _parse(["demo"]).out == "outputs/demo"
    assert _parse(["data", "download-labels", "market1501", "r", "--quiet"]).no_progress
    for name, hidden in (
        ("train", ("--output-dir", "-o ", "-c ")),
        ("visualize", ("--output ", "-k ")),
        ("demo", ("--output-dir",)),
        ("eval", ("-k ", "-c ")),
    ):
        text = _help(name)
        assert "--device" in text and "--no-progress" in text
        assert ("--out" in text) is (name != "eval")  # eval writes --json only
        for flag in hidden:
            assert flag not in text, (name, flag)


def test_a_required_config_or_checkpoint_is_still_required(capsys):
    import pytest

    with pytest.raises(SystemExit):
        _parse(["train"])
    assert "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["eval"])
    assert "--checkpoint" in capsys.readouterr().err


def test_help_and_every_command_parser_load_no_torch():
    code = (
        "import sys\n"
        "from bpbreid.__main__ import build_parser\n"
        "build_parser()\n"
        "heavy = [m for m in ('torch', 'bpbreid.engine', 'bpbreid.data.datasets') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_choices_spelled_out_for_help_match_the_library():
    from bpbreid.cli import export as export_command
    from bpbreid.cli import infer as infer_command
    from bpbreid.export import FORMATS
    from bpbreid.official import OFFICIAL_CHECKPOINTS

    assert infer_command.OFFICIAL_MODELS == tuple(OFFICIAL_CHECKPOINTS)
    assert export_command.FORMATS == FORMATS


def test_the_label_folder_default_is_the_vocabulary_constant():
    from bpbreid.parts import DEFAULT_MASKS_DIR

    assert _parse(["labels", "images"]).masks_dir == DEFAULT_MASKS_DIR
    assert _parse(["data", "check", "root"]).masks_dir == DEFAULT_MASKS_DIR
    assert _parse(["data", "download-labels", "market1501", "r"]).masks_dir == DEFAULT_MASKS_DIR
