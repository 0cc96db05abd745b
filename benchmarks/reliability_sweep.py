"""Hostile and careless input, through the command line: is every case handled?

Runs each case as a user would (``python -m bpbreid ...`` in a fresh process, on a tiny
synthetic set or small generated trees in a temporary folder) and checks what must hold:
the exit code, a message naming the file or key, no traceback, nothing written that must
not be, nothing lost that must be kept. Prints one line per case and ``N/N handled``;
exits 1 when a case is not handled.

    python benchmarks/reliability_sweep.py            # every case (a few minutes on 2 cores)
    python benchmarks/reliability_sweep.py --only settings files

The unit tests cover each case too (tests/test_safe_loading.py, test_hardening_engine.py,
test_config_validation.py, test_data_hardening.py); this script checks them end to end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PYTHON = sys.executable
TRAIN_TIMEOUT = 600


@dataclass
class Case:
    group: str
    name: str
    check: Callable[[Path], str | None]  # None when handled, else what went wrong


def bpbreid(*args: str, timeout: float = TRAIN_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="default")
    return subprocess.run(
        [PYTHON, "-m", "bpbreid", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def expect(
    result: subprocess.CompletedProcess, code: int, *needles: str, stream: str = "any"
) -> str | None:
    """None when ``result`` exited with ``code``, without traceback, saying every needle."""
    text = result.stdout + result.stderr if stream == "any" else getattr(result, stream)
    if "Traceback (most recent call last)" in result.stderr:
        return "traceback:\n" + result.stderr[-1500:]
    if result.returncode != code:
        return f"exit code {result.returncode}, expected {code}:\n{text[-1500:]}"
    missing = [n for n in needles if n not in text]
    if missing:
        return f"message lacks {missing}:\n{text[-1500:]}"
    return None


# --------------------------------------------------------------------------------------
# Fixtures: a tiny training configuration, hostile files
# --------------------------------------------------------------------------------------


def tiny(work: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long training on the tiny synthetic preset."""
    return [
        "--config",
        "synthetic_cpu",
        "data.synthetic.preset=tiny",
        f"data.root={work / 'data'}",
        "train.device=cpu",
        "train.batch_size=16",
        "train.max_steps=null",
        "train.save_every=1",
        "train.test_at_end=false",
        *extra,
    ]


def train(work: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    args = ["train", *tiny(work, *extra), "--out", str(out), "--no-progress"]
    return bpbreid(*(args + (["--resume"] if resume else [])))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_checkpoint_cache: dict[str, Path] = {}


def trained_checkpoint(work: Path) -> Path:
    """A finished tiny model (trained once per sweep)."""
    if "model" not in _checkpoint_cache:
        out = work / "trained"
        result = train(work, out, "train.max_epoch=1")
        if result.returncode != 0:
            raise RuntimeError("the tiny training failed:\n" + result.stderr[-2000:])
        _checkpoint_cache["model"] = out / "model.pth"
    return _checkpoint_cache["model"]


def torchscript_archive(folder: Path) -> tuple[Path, Path]:
    """A TorchScript archive named model.pth whose loading writes ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "written_by_the_archive"
    script = f"""
import torch

class Hostile(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.target = {str(marker)!r}
        self.mapped = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> list[str]:
        return [self.target]

    @torch.jit.export
    def __setstate__(self, state: list[str]) -> None:
        self.target = state[0]
        self.mapped = torch.from_file(self.target, True, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

torch.jit.script(Hostile()).save({str(folder / "model.pth")!r})
"""
    # TorchScript reads the class's source: it must live in a file, not in ``-c``.
    builder = folder / "build_archive.py"
    builder.write_text(script)
    subprocess.run([PYTHON, str(builder)], check=True, capture_output=True)
    return folder / "model.pth", marker


def bomb_png(path: Path, size: int = 20000) -> Path:
    """A valid PNG header claiming ``size`` x ``size`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def market_tree(root: Path, ids: int = 6) -> Path:
    """A small Market-1501 tree with labels; returns the dataset folder."""
    import numpy as np
    from PIL import Image

    folder = root / "Market-1501-v15.09.15"
    rng = np.random.default_rng(0)
    for split, cam in (("bounding_box_train", 1), ("query", 2), ("bounding_box_test", 3)):
        for pid in range(1, ids + 1):
            for k in range(4):
                name = f"{pid:04d}_c{cam + k % 2}s1_{k:06d}_00.jpg"
                image = folder / split / name
                image.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(image)
                label = folder / "masks" / "pifpaf_maskrcnn_filtering" / split / f"{image.stem}.npy"
                label.parent.mkdir(parents=True, exist_ok=True)
                np.save(label, np.full((36, 16, 8), 0.5, np.float32))
    return folder


def market_overrides(root: Path) -> list[str]:
    return [
        "data.name=market1501",
        f"data.root={root}",
        "data.extra_query_sets=[]",
        "train.batch_size=8",
        "train.num_instances=2",
        "train.max_steps=2",
        "train.device=cpu",
    ]


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


def security_cases() -> list[Case]:
    def refused(command: list[str]) -> Callable[[Path], str | None]:
        def check(work: Path) -> str | None:
            archive, marker = torchscript_archive(work / f"ts_{command[0]}")
            args = [a.format(archive=archive, folder=archive.parent) for a in command]
            problem = expect(bpbreid(*args), 2, "TorchScript archive")
            if marker.exists():
                return "the archive's code ran: it wrote " + str(marker)
            if problem:
                return problem
            # Control: a plain torch.load does run it, so the refusal above meant something.
            control = f"import torch\ntry: torch.load({str(archive)!r}, weights_only=False)\nexcept Exception: pass"
            subprocess.run([PYTHON, "-c", control], capture_output=True)
            return None if marker.exists() else "control failed: the archive is not hostile"

        return check

    commands = {
        "infer": [
            "infer",
            "--checkpoint",
            "{archive}",
            "--query",
            "{folder}",
            "--gallery",
            "{folder}",
        ],
        "eval": ["eval", "--checkpoint", "{archive}"],
        "visualize": ["visualize", "--checkpoint", "{archive}"],
        "export": ["export", "--checkpoint", "{archive}", "--out", "{folder}/x.onnx"],
    }
    return [
        Case("security", f"TorchScript archive as a checkpoint: {name}", refused(cmd))
        for name, cmd in commands.items()
    ]


def settings_cases() -> list[Case]:
    refused = [
        ("train.num_instances=0", "train.num_instances"),
        ("train.batch_size=-4", "train.batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("test.batch_size=0", "test.batch_size"),
        ("data.height=0", "data.height"),
        ("data.width=-5", "data.width"),
        ("train.lr=-1", "train.lr"),
        ("train.max_steps=-1", "train.max_steps"),
        ("test.dist_metric=foo", "test.dist_metric"),
        ("train.lr=[1,", "train.lr"),
    ]
    cases = []
    for override, key in refused:

        def check(work: Path, override: str = override, key: str = key) -> str | None:
            out = work / "settings"
            problem = expect(bpbreid("train", *tiny(work, override), "--out", str(out)), 2, key)
            if problem is None and (out / "model.pth").exists():
                return "a model was saved"
            return problem

        cases.append(Case("settings", f"train {override}", check))

    def config_is_a_folder(work: Path) -> str | None:
        return expect(bpbreid("train", "--config", str(work)), 2, str(work))

    def config_not_utf8(work: Path) -> str | None:
        bad = work / "latin1.yaml"
        bad.write_bytes("train:\n  lr: 0.001 # caf\xe9\n".encode("latin-1"))
        return expect(bpbreid("train", "--config", str(bad)), 2, "latin1.yaml")

    def demo_unknown_model(work: Path) -> str | None:
        return expect(bpbreid("demo", "--models", "foo"), 2, "foo", "bpbreid")

    return cases + [
        Case("settings", "a folder as --config", config_is_a_folder),
        Case("settings", "a non-UTF-8 file as --config", config_not_utf8),
        Case("settings", "demo --models foo", demo_unknown_model),
    ]


def divergence_cases() -> list[Case]:
    def lr_under_warmup(work: Path) -> str | None:
        out = work / "div_warmup"
        result = train(work, out, "train.lr=1e9", "train.warmup_epochs=5", "train.max_epoch=6")
        problem = expect(result, 2, "finite")
        if problem:
            return problem
        # A checkpoint may remain from the epochs before the divergence: it must be finite.
        last = out / "last.pth"
        if last.exists():
            import torch

            weights = torch.load(last, weights_only=True)["model"]
            bad = [
                k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()
            ]
            if bad:
                return f"last.pth holds non-finite tensors: {bad[:3]}"
        return None

    def diverging_resume_keeps_the_good_checkpoint(work: Path) -> str | None:
        out = work / "div_resume"
        keep = ("train.warmup_epochs=0", "train.lr_scheduler=constant")
        first = train(work, out, *keep, "train.max_epoch=2")
        if first.returncode != 0:
            return "the first training failed:\n" + first.stderr[-1500:]
        before = digest(out / "last.pth")
        result = train(work, out, *keep, "train.max_epoch=6", "train.lr=1e9", resume=True)
        problem = expect(result, 2, "last.pth")
        if problem:
            return problem
        if digest(out / "last.pth") != before:
            return "last.pth changed after the divergence"
        return expect(bpbreid("eval", "--checkpoint", str(out / "last.pth"), "--no-progress"), 0)

    def non_finite_checkpoint_refused(work: Path) -> str | None:
        import torch

        data = torch.load(trained_checkpoint(work), weights_only=True)
        key = next(k for k in data["model"] if k.endswith("running_var"))
        data["model"][key][0] = float("inf")
        bad = work / "inf.pth"
        torch.save(data, bad)
        return expect(bpbreid("eval", "--checkpoint", str(bad), "--no-progress"), 2, "non-finite")

    def changed_lr_takes_effect_on_resume(work: Path) -> str | None:
        out = work / "resume_lr"
        keep = ("train.warmup_epochs=0", "train.lr_scheduler=constant")
        first = train(work, out, *keep, "train.max_epoch=1")
        if first.returncode != 0:
            return "the first training failed:\n" + first.stderr[-1500:]
        result = train(work, out, *keep, "train.max_epoch=2", "train.lr=0.0001", resume=True)
        problem = expect(result, 0, "train.lr changed")
        if problem:
            return problem
        rows = (out / "steps.csv").read_text().splitlines()
        header = rows[0].split(",")
        if "lr" not in header:
            return "steps.csv has no lr column"
        last_lr = float(rows[-1].split(",")[header.index("lr")])
        return None if abs(last_lr - 1e-4) < 1e-9 else f"steps after resume ran at lr={last_lr}"

    def runaway_warned(work: Path) -> str | None:
        result = train(work, work / "runaway", "train.lr=1e6", "train.max_epoch=10")
        return expect(result, 0, "ran away")

    return [
        Case("divergence", "train.lr=1e9 under warm-up", lr_under_warmup),
        Case(
            "divergence",
            "a diverging resume keeps the good last.pth",
            diverging_resume_keeps_the_good_checkpoint,
        ),
        Case("divergence", "eval of a checkpoint holding inf", non_finite_checkpoint_refused),
        Case(
            "divergence",
            "a changed train.lr takes effect on resume",
            changed_lr_takes_effect_on_resume,
        ),
        Case("divergence", "train.lr=1e6 ends with a warning", runaway_warned),
    ]


def files_cases() -> list[Case]:
    def symlink_loop_check(work: Path) -> str | None:
        folder = market_tree(work / "loop")
        (folder / "bounding_box_train" / "loop").symlink_to("loop")
        return expect(bpbreid("data", "check", str(work / "loop")), 0, "loop")

    def bomb_check(work: Path) -> str | None:
        folder = market_tree(work / "bomb")
        bomb_png(folder / "bounding_box_train" / "0003_c1s1_000000_00.jpg")
        return expect(bpbreid("data", "check", str(work / "bomb")), 1, "0003_c1s1_000000_00.jpg")

    def bomb_train(work: Path) -> str | None:
        # 4 identities and batches of 4 x 2: every batch holds identity 3, all of whose
        # training images are bombs, so the first batch meets one.
        folder = market_tree(work / "bomb_train", ids=4)
        for image in (folder / "bounding_box_train").glob("0003_*.jpg"):
            bomb_png(image)
        args = ["train", "--config", "synthetic_cpu", *market_overrides(work / "bomb_train")]
        args += ["data.workers=1", "--out", str(work / "bomb_out"), "--no-progress"]
        return expect(bpbreid(*args), 2, "bounding_box_train/0003_c")

    def loop_and_bomb_infer(work: Path) -> str | None:
        gallery = market_tree(work / "infer_tree") / "bounding_box_test"
        query = work / "infer_query"
        query.mkdir()
        (query / "loop").symlink_to("loop")
        bomb_png(query / "0003_c2s1_000000_00.png")
        args = ["infer", "--checkpoint", str(trained_checkpoint(work)), "--query", str(query)]
        args += ["--gallery", str(gallery), "--device", "cpu", "--no-progress"]
        return expect(bpbreid(*args), 2, "0003_c2s1_000000_00.png")

    def corrupt_outside_a_sample(work: Path) -> str | None:
        import numpy as np

        folder = market_tree(work / "corrupt")
        (folder / "bounding_box_test" / "0006_c4s1_000003_00.jpg").write_bytes(b"garbage")
        label = folder / "masks" / "pifpaf_maskrcnn_filtering" / "query" / "0005_c2s1_000002_00.npy"
        np.save(label, np.full((36, 16, 8), 2.0, np.float32))
        result = bpbreid("data", "check", str(work / "corrupt"))
        return expect(result, 1, "0006_c4s1_000003_00.jpg", "0005_c2s1_000002_00.npy", "checked")

    def archive_conflict(work: Path) -> str | None:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.full((36, 16, 8), 0.5, np.float32))
        archive = work / "conflict.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("query/a.npy", buffer.getvalue())
            zf.writestr("query/a.npy/b.npy", buffer.getvalue())
        root = work / "labels_root"
        (root / "Market-1501-v15.09.15").mkdir(parents=True)
        args = ["data", "download-labels", "market1501", str(root), "--archive", str(archive)]
        problem = expect(bpbreid(*args), 2, "query/a.npy")
        if problem is None and any((root / "Market-1501-v15.09.15").iterdir()):
            return "something was extracted"
        return problem

    return [
        Case("files", "a symlink loop in an image folder (data check)", symlink_loop_check),
        Case("files", "a 20000x20000 image header (data check)", bomb_check),
        Case("files", "a 20000x20000 image header (train, loader worker)", bomb_train),
        Case("files", "a loop and a bomb among query images (infer)", loop_and_bomb_infer),
        Case(
            "files",
            "corrupt image and label outside a sample (data check)",
            corrupt_outside_a_sample,
        ),
        Case("files", "label archive with a file and a folder of one name", archive_conflict),
    ]


def folder_cases() -> list[Case]:
    def busy_folder_refused(work: Path) -> str | None:
        out = work / "busy"
        out.mkdir()
        holder = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(120)"])
        try:
            lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "now"}
            (out / ".lock").write_text(json.dumps(lock))
            return expect(train(work, out, "train.max_epoch=1"), 2, str(out), str(holder.pid))
        finally:
            holder.kill()
            holder.wait()

    def stale_lock_taken_over(work: Path) -> str | None:
        out = work / "stale"
        out.mkdir()
        gone = subprocess.Popen([PYTHON, "-c", "pass"])
        gone.wait()
        lock = {"pid": gone.pid, "host": socket.gethostname(), "started": "then"}
        (out / ".lock").write_text(json.dumps(lock))
        problem = expect(train(work, out, "train.max_epoch=1"), 0, "Took over")
        if problem is None and (out / ".lock").exists():
            return "the lock was not released at the end"
        return problem

    def kill_then_resume(work: Path) -> str | None:
        out = work / "killed"
        args = [PYTHON, "-m", "bpbreid", "train", *tiny(work, "train.max_epoch=40")]
        process = subprocess.Popen(
            [*args, "--out", str(out), "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "last.pth").exists():
            time.sleep(0.5)
        time.sleep(3)
        process.send_signal(signal.SIGKILL)
        process.wait()
        (out / ".last.pth.deadbeef.tmp").write_bytes(b"torn")  # as a kill mid-write leaves
        result = train(work, out, "train.max_epoch=6", resume=True)
        problem = expect(result, 0, "Removed", "temporary")
        if problem:
            return problem
        epochs = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
        if len(epochs) != len(set(epochs)):
            return f"metrics.csv repeats epochs: {epochs}"
        steps = (out / "steps.csv").read_text().splitlines()
        if len(steps) < 2:
            return "steps.csv lost its history"
        if list(out.glob(".*.tmp")):
            return "temporary files are left"
        return None

    return [
        Case("folders", "a second run on a folder in use", busy_folder_refused),
        Case("folders", "a stale lock of a killed run", stale_lock_taken_over),
        Case("folders", "kill -9, then resume: logs whole, temporaries gone", kill_then_resume),
    ]


GROUPS: dict[str, Callable[[], list[Case]]] = {
    "security": security_cases,
    "settings": settings_cases,
    "divergence": divergence_cases,
    "files": files_cases,
    "folders": folder_cases,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(GROUPS), help="groups to run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    cases = [case for name in (args.only or GROUPS) for case in GROUPS[name]()]
    work = Path(tempfile.mkdtemp(prefix="bpbreid_sweep_"))
    handled = 0
    start = time.time()
    for i, case in enumerate(cases, 1):
        folder = work / f"case{i:02d}"
        folder.mkdir()
        (folder / "data").symlink_to(work / "shared_data", target_is_directory=True)
        (work / "shared_data").mkdir(exist_ok=True)
        t0 = time.time()
        try:
            problem = case.check(folder)
        except Exception as exc:  # the sweep itself failed on this case
            problem = f"{type(exc).__name__}: {exc}"
        ok = problem is None
        handled += ok
        status = "handled" if ok else "NOT HANDLED"
        print(
            f"[{i:2d}/{len(cases)}] {case.group:10s} {case.name}: {status} ({time.time() - t0:.0f} s)"
        )
        if not ok:
            print("    " + problem.replace("\n", "\n    "))
        sys.stdout.flush()
    print(f"\n{handled}/{len(cases)} handled in {time.time() - start:.0f} s")
    if args.keep:
        print(f"files kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if handled == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
