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


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "bpbreid", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "<command>" in result.stdout
