"""Solutions to the exercises of chapter 02 (part attention).

Run ``python notebooks/solutions/ch02_part_attention.py``; ``tests/test_solutions.py`` runs it too.
The chapter's data and training are shrunk to fit a test: the tiny synthetic set (generated in a
temporary folder) and a few steps of the pixel loss instead of the chapter's 200, so the part maps
of exercises 1 and 2 are barely trained: the code shows what to compare, the notebook's model
gives the numbers worth reading. Exercise 3 needs no training (stripes are fixed).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

from bpbreid.config import copy_config, load_config
from bpbreid.data.datasets import ImageDataset, build_dataset_from_config, build_loaders
from bpbreid.data.parsing import hard_labels
from bpbreid.data.synthetic import generate
from bpbreid.data.transforms import build_transforms
from bpbreid.losses import part_attention_loss
from bpbreid.model import build_model


@functools.cache
def _data():
    """The tiny set: its root, training loader, occluded queries and their holistic twins."""
    root = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "synthetic", "tiny", progress=False)
    cfg = _config(root)
    data = build_dataset_from_config(cfg)
    transform = build_transforms(cfg, train=False)

    def load(samples):
        dataset = ImageDataset(samples, transform)
        return torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])

    occluded, holistic = load(data.query), load(data.extra_queries["query_holistic"])
    return root, data, build_loaders(cfg, data)["train"], occluded, holistic


@functools.cache
def _base(root: Path):
    return load_config(
        "synthetic_cpu",
        [
            f"data.root={root}",
            "data.synthetic.preset=tiny",
            "train.batch_size=16",
            "data.workers=0",
        ],
    )


def _config(root: Path, **bpbreid: str):
    """The chapter's config with some ``model.bpbreid`` settings changed."""
    cfg = copy_config(_base(root))
    for key, value in bpbreid.items():
        setattr(cfg.model.bpbreid, key, value)
    return cfg


@functools.cache
def _fitted(head: str, steps: int = 2):
    """A model with this part head after ``steps`` steps of the pixel loss (plain SGD)."""
    root, data, loader, _, _ = _data()
    cfg = _config(root, head=head)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=data.num_train_pids).train()
    for _, batch in zip(range(steps), loader):
        loss = part_attention_loss(model(batch["image"]).pixel_logits, batch["target_masks"])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
    return model.eval()


def _label_visibility(batch, parts: int) -> torch.Tensor:
    """[N, K] True where the part appears in the hard labels."""
    ids = torch.arange(1, parts + 1).view(1, parts, 1, 1)
    return (hard_labels(batch["target_masks"]).unsqueeze(1) == ids).flatten(2).any(2)


def _most_occluded() -> int:
    _, _, _, occluded, _ = _data()
    visible = _label_visibility(occluded, occluded["target_masks"].shape[1] - 1)
    return int(visible.sum(1).argmin())


def exercise_1() -> dict[str, dict[str, object]]:
    """Visibility rates on occluded queries with the paper's ``1x1`` head and the CPU head.

    Per head: the part map size, the model's visibility rate per part, the labels' rate and the
    model/label agreement. The 1x1 head predicts on the 8x4 map, where thin parts (legs, arms)
    cover a cell or less.
    """
    _, _, _, occluded, _ = _data()
    answer = {}
    for head in ("1x1", "3x3_stride4"):
        model = _fitted(head)
        with torch.no_grad():
            output = model(occluded["image"])
        labels = _label_visibility(occluded, output.visibility.shape[1])
        model_visible = output.visibility.bool()
        answer[head] = {
            "map size": tuple(output.parts_masks.shape[-2:]),
            "model rate": output.visibility.float().mean(0).tolist(),
            "label rate": labels.float().mean(0).tolist(),
            "agreement": float((model_visible == labels).float().mean()),
        }
    return answer


def exercise_2() -> dict[str, list[float]]:
    """Binary and soft visibility of the most occluded query (CPU head).

    The soft score is the maximum of the part's map over pixels: a hidden part gets the highest
    probability it reaches anywhere, small but not 0.
    """
    _, _, _, occluded, _ = _data()
    model, worst = _fitted("3x3_stride4"), _most_occluded()
    image = occluded["image"][worst : worst + 1]
    answer = {"labels": _label_visibility(occluded, 4)[worst].float().tolist()}
    for name, binary in (("binary", True), ("soft", False)):
        model.testing_binary_visibility_score = binary
        with torch.no_grad():
            answer[name] = model(image).visibility[0].tolist()
    model.testing_binary_visibility_score = True
    return answer


def exercise_3() -> dict[str, object]:
    """PCB stripes on the most occluded query: which stripe covers the occluder.

    The occluder is where the query differs from its holistic twin (same person, pose and scene).
    """
    root, data, _, occluded, holistic = _data()
    torch.manual_seed(0)
    model = build_model(_config(root, part_mode="stripes"), data.num_train_pids)
    worst = _most_occluded()
    with torch.no_grad():
        output = model.eval()(occluded["image"][worst : worst + 1])
    occluder = (occluded["image"][worst] - holistic["image"][worst]).abs().amax(0) > 0.1
    masks = torch.nn.functional.interpolate(
        output.parts_masks[:, 1:].float(), size=occluder.shape, mode="nearest"
    )[0]  # [K, H, W] stripes at image size
    share = (masks * occluder).sum((1, 2)) / occluder.sum().clamp_min(1)
    return {
        "pixel_logits is None": output.pixel_logits is None,
        "visibility": output.visibility[0].tolist(),
        "occluder share per stripe": share.tolist(),
        "stripe with the occluder": int(share.argmax()),
    }


if __name__ == "__main__":
    for head, row in exercise_1().items():
        print(f"1. head {head}:", {k: v if isinstance(v, tuple) else (
            round(v, 2) if isinstance(v, float) else [round(x, 2) for x in v]) for k, v in row.items()})  # fmt: skip
    print("2. most occluded query:", {k: [round(x, 2) for x in v] for k, v in exercise_2().items()})
    print("3. stripes:", exercise_3())
