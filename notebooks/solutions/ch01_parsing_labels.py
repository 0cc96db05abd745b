"""Solutions to the exercises of chapter 01 (parsing labels).

Run ``python notebooks/solutions/ch01_parsing_labels.py``; ``tests/test_solutions.py`` runs it too.
No dataset is generated: one pedestrian is drawn as in section 3 and its fields rendered.
"""

from __future__ import annotations

import numpy as np

from bpbreid.data.parsing import (
    PART_GROUPINGS,
    group_fields,
    hard_labels,
    part_targets,
    render_fields,
)
from bpbreid.data.synthetic import FACING_YAW, Pose, draw_person, identity_appearance
from bpbreid.data.synthetic.render import default_label_stride


def exercise_1() -> dict[str, dict[str, int]]:
    """For each part of ``two``: how many fields of each ``four`` part it contains."""
    four, two = PART_GROUPINGS["four"], PART_GROUPINGS["two"]
    return {
        big: {small: len(set(fields) & set(two[big])) for small, fields in four.items()}
        for big in two
    }


def exercise_2(height: int = 64, width: int = 32) -> dict[str, float]:
    """Hard labels with the ``threshold`` and ``diff_from_max`` background rules on one person."""
    person = draw_person(
        identity_appearance(seed=0, pid=7), Pose(facing="front", yaw=FACING_YAW["front"], phase=1.0),
        height=height, width=width,
    )  # fmt: skip
    stride = default_label_stride(height)
    fields = render_fields(
        person.keypoints, height, width, out_size=(height // stride, width // stride)
    )
    parts = group_fields(fields, "eight")
    labels = {
        s: hard_labels(part_targets(parts, strategy=s)) for s in ("threshold", "diff_from_max")
    }
    body = {s: float((lab > 0).mean()) for s, lab in labels.items()}
    changed = float((labels["threshold"] != labels["diff_from_max"]).mean())
    soft = {s: part_targets(parts, strategy=s) for s in ("threshold", "diff_from_max")}
    soft_change = float(np.abs(soft["threshold"] - soft["diff_from_max"]).max())
    return {"body share, threshold": body["threshold"], "body share, diff_from_max": body["diff_from_max"],
            "pixels that change": changed,
            "largest change of a soft target": soft_change}  # fmt: skip


def exercise_3() -> dict[str, tuple[int, int]]:
    """Label size of 64x32 and 128x64 images: the stride grows with the height."""
    return {
        f"{h}x{w}": (h // default_label_stride(h), w // default_label_stride(h))
        for h, w in ((64, 32), (128, 64), (256, 128))
    }


if __name__ == "__main__":
    print("1. fields of each 'four' part inside each 'two' part:", exercise_1())
    print("2.", {k: round(v, 3) for k, v in exercise_2().items()})
    print("3. label size per image size:", exercise_3())
