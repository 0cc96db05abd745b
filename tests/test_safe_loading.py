"""Hostile files given as checkpoints: a TorchScript archive must never run.

The archive built here restores its module with a ``__setstate__`` that creates and
writes a file (``torch.from_file(..., shared=True)``). The first test shows that a plain
``torch.load`` really does write it, so the later tests, which check that the file is
never written by any of the package's loaders, can fail.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from bpbreid.__main__ import main
from bpbreid.errors import CheckpointError
from bpbreid.serialization import check_not_torchscript, torchscript_markers


class _WritesAFileWhenLoaded(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.mapped = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> list[str]:
        return [self.target]

    @torch.jit.export
    def __setstate__(self, state: list[str]) -> None:
        self.target = state[0]
        # shared=True maps the file for writing: it is created on disk.
        self.mapped = torch.from_file(self.target, True, 16)
        self.mapped.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    """(a TorchScript archive named like a checkpoint, the file its code would write)."""
    folder = tmp_path_factory.mktemp("hostile")
    target = folder / "written_by_the_archive"
    scripted = torch.jit.script(_WritesAFileWhenLoaded(str(target)))
    path = folder / "model.pth"
    scripted.save(str(path))
    assert not target.exists()
    return path, target


def test_the_archive_runs_code_under_a_plain_torch_load(hostile):
    path, target = hostile
    with pytest.warns(UserWarning):  # torch says it dispatches to torch.jit.load
        try:
            torch.load(path, weights_only=False)
        except Exception:  # the module is incomplete; its code has run by then
            pass
    assert target.exists(), "the test archive is not hostile: the refusal tests prove nothing"
    target.unlink()


def _refused_without_running(hostile, load) -> str:
    path, target = hostile
    if target.exists():
        target.unlink()
    with pytest.raises(CheckpointError, match="TorchScript archive") as info:
        load(path)
    assert not target.exists(), "the archive's code ran"
    return str(info.value)


def test_every_library_loader_refuses_it_before_opening(hostile):
    from bpbreid.engine.checkpoint import read_checkpoint
    from bpbreid.inference import load_model
    from bpbreid.model.backbones import read_state_dict
    from bpbreid.official import load_official_checkpoint, restricted_torch_load

    for load in (
        read_checkpoint,
        restricted_torch_load,
        load_official_checkpoint,
        read_state_dict,
        lambda p: load_model(p, device="cpu"),
    ):
        message = _refused_without_running(hostile, load)
        assert str(hostile[0]) in message


def test_a_pretrained_path_pointing_at_it_is_refused(hostile):
    from bpbreid.config import load_config
    from bpbreid.model import build_model

    path, target = hostile
    cfg = load_config("synthetic_cpu", ["model.pretrained=true", f"model.pretrained_path={path}"])
    _refused_without_running(hostile, lambda p: build_model(cfg, num_classes=4))
    assert not target.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["infer", "--checkpoint", "{path}", "--query", "{folder}", "--gallery", "{folder}"],
        ["eval", "--checkpoint", "{path}"],
        ["visualize", "--checkpoint", "{path}"],
        ["export", "--checkpoint", "{path}", "--out", "{folder}/out.onnx"],
    ],
)
def test_every_command_refuses_it_with_exit_2_and_no_file_written(hostile, command, capsys):
    path, target = hostile
    if target.exists():
        target.unlink()
    argv = [a.format(path=path, folder=path.parent) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "TorchScript archive" in err and "Traceback" not in err
    assert not target.exists(), "the archive's code ran"


def test_plain_checkpoints_and_legacy_pickles_pass_the_check(tmp_path):
    zipped = tmp_path / "zip.pth"
    torch.save({"weights": torch.ones(2)}, zipped)
    legacy = tmp_path / "legacy.pth"
    torch.save({"weights": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    check_not_torchscript(zipped)
    check_not_torchscript(legacy)
    check_not_torchscript(tmp_path / "missing.pth")  # the caller reports missing files


def test_markers_are_found_with_or_without_the_archive_folder():
    assert torchscript_markers(["a/data.pkl", "a/version"]) == []
    assert torchscript_markers(["a/constants.pkl"]) == ["a/constants.pkl"]
    assert torchscript_markers(["constants.pkl"]) == ["constants.pkl"]
    assert torchscript_markers(["a/code/__torch__.py"]) == ["a/code/__torch__.py"]


def test_a_zip_whose_directory_cannot_be_read_is_refused(tmp_path):
    torn = tmp_path / "torn.pth"
    torch.save({"weights": torch.ones(64)}, torn)
    torn.write_bytes(torn.read_bytes()[:40])  # local header kept, directory gone
    assert not zipfile.is_zipfile(torn)
    with pytest.raises(CheckpointError, match="directory cannot be read"):
        check_not_torchscript(torn)
