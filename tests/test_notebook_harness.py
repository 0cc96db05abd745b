import json
import re
from pathlib import Path

import pytest

from bpbreid import notebook, paths
from bpbreid.notebook import colab_badge, colab_url, detect_mode, find_repo_root, thread_policy

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_root_found_from_repo_root_and_from_notebooks(monkeypatch):
    monkeypatch.delenv("BPBREID_ROOT", raising=False)
    monkeypatch.chdir(ROOT)
    assert find_repo_root() == ROOT
    monkeypatch.chdir(ROOT / "notebooks")
    assert find_repo_root() == ROOT


def test_root_found_by_walking_up_when_package_is_installed_elsewhere(monkeypatch, tmp_path):
    monkeypatch.delenv("BPBREID_ROOT", raising=False)
    # Pretend the package lives in site-packages: only the working directory can tell.
    monkeypatch.setattr(paths, "__file__", str(tmp_path / "site" / "bpbreid" / "paths.py"))
    repo = tmp_path / "clone"
    (repo / "bpbreid").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname='bpbreid'\n")
    monkeypatch.chdir(repo / "notebooks")
    assert find_repo_root() == repo


def test_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BPBREID_ROOT", str(tmp_path))
    assert find_repo_root() == tmp_path.resolve()


def test_fast_mode_under_tests():
    # tests/conftest.py and `make test` set BPBREID_MODE=FAST.
    assert detect_mode(cuda_available=True) == "FAST"


def test_mode_by_hardware_and_bad_value(monkeypatch):
    monkeypatch.delenv("BPBREID_MODE", raising=False)
    assert detect_mode(cuda_available=False) == "CPU"
    assert detect_mode(cuda_available=True) == "CUDA"
    monkeypatch.setenv("BPBREID_MODE", "turbo")
    with pytest.raises(ValueError, match="FAST"):
        detect_mode(cuda_available=False)


def test_setup_in_fast_mode_resolves_paths(monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    env = notebook.setup(seed=3, verbose=False)
    assert env.mode == "FAST" and env.fast and env.device == "cpu"
    assert env.root == ROOT
    assert env.data_dir == ROOT / "data" and env.output_dir == ROOT / "outputs"
    assert env.pick(fast=1, cpu=2, cuda=3) == 1
    assert "torch" in env.versions


def test_setup_sets_the_course_figure_style(monkeypatch):
    import matplotlib as mpl

    monkeypatch.chdir(ROOT / "notebooks")
    with mpl.rc_context():
        notebook.setup(verbose=False)
        assert mpl.rcParams["figure.dpi"] >= 100 and mpl.rcParams["savefig.dpi"] >= 100
        assert mpl.rcParams["font.size"] >= 9 and mpl.rcParams["image.cmap"] == "viridis"


def test_thread_policy():
    assert thread_policy(2) == 1
    assert thread_policy(1) == 1
    assert thread_policy(16) == 8


def test_badge_url_is_defined_once():
    url = colab_url("00_part_based_reid.ipynb")
    assert url.startswith("https://colab.research.google.com/github/")
    assert url.endswith("/blob/main/notebooks/00_part_based_reid.ipynb")
    assert notebook.REPO_URL.split("github.com/")[1] in url


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_each_notebook_badge_points_at_itself(path: Path):
    cells = json.loads(path.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown"
    assert colab_badge(path.name) in first, f"{path.name}: badge must be {colab_badge(path.name)}"
    # Every Colab link in the notebook points at this notebook, and every clone at the repo.
    text = path.read_text()
    for link in re.findall(r"https://colab\.research\.google\.com/github/[^)\s\"]+", text):
        assert link == colab_url(path.name), f"{path.name}: stray Colab link {link}"
    for repo in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text):
        if "clone" in text and repo.startswith("https://github.com/bpbreid"):
            assert repo == notebook.REPO_URL


def test_notebooks_are_numbered_and_executed():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        assert re.match(r"\d\d_[a-z0-9_]+\.ipynb$", path.name), path.name
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert any(c.get("outputs") for c in code), f"{path.name} is committed without outputs"
        assert not any(
            o.get("output_type") == "error" for c in code for o in c.get("outputs", [])
        ), f"{path.name} has an error output"
        assert "from bpbreid.notebook import setup" in "".join(code[0]["source"])


def test_display_path_is_relative_inside_the_repository(tmp_path):
    from bpbreid.paths import display_path

    root = find_repo_root()
    assert display_path(root / "data" / "synthetic") == "data/synthetic"
    assert display_path(root) == "."
    assert display_path(tmp_path / "x") == str(tmp_path / "x")


# Absolute paths of a machine: a home, a checkout, a temporary or Colab folder, a drive.
MACHINE_PATH = re.compile(
    r"(?<![\w.])(/home/|/Users/|/root/|/work/|/tmp/|/content/|/mnt/|[A-Z]:\\\\)"
)


def test_committed_outputs_carry_no_absolute_path_of_a_machine():
    root = find_repo_root()
    found = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        for index, cell in enumerate(notebook["cells"]):
            for output in cell.get("outputs", []):
                texts = [output.get("text", "")]
                texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
                for text in texts:
                    text = "".join(text) if isinstance(text, list) else text
                    match = MACHINE_PATH.search(text)
                    if match:
                        found.append(
                            f"{path.name} cell {index}: ...{text[max(0, match.start() - 20) : match.end() + 40]}..."
                        )
    assert not found, "absolute paths in committed outputs:\n" + "\n".join(found)
