"""Published results of part-based and occluded re-id methods, with their sources.

Rank-1 / mAP in percent, single query, no re-ranking. ``None`` where a paper or its
repository reports no figure. Used by notebook 00 and the README.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    method: str
    parts_from: str  # what defines the parts
    venue: str
    market_r1: float | None
    market_map: float | None
    occluded_duke_r1: float | None
    occluded_duke_map: float | None
    source: str


PUBLISHED_RESULTS: tuple[PublishedResult, ...] = (
    PublishedResult(
        "PCB+RPP", "horizontal stripes", "ECCV 2018", 93.8, 81.6, None, None, "PCB paper"
    ),
    PublishedResult(
        "PCB",
        "horizontal stripes",
        "ECCV 2018",
        92.3,
        77.4,
        40.0,
        33.0,
        "PCB paper; Occluded-Duke rerun reported in the PVPM repository (issue #6), approximate",
    ),
    PublishedResult(
        "MGN",
        "stripes at several granularities",
        "ACM MM 2018",
        95.7,
        86.9,
        None,
        None,
        "MGN paper (arXiv 1804.01438)",
    ),
    PublishedResult(
        "HOReID",
        "pose keypoints + graph",
        "CVPR 2020",
        None,
        None,
        55.1,
        43.8,
        "PFD_Net README",
    ),
    PublishedResult(
        "ISP",
        "learned pixel clusters (pseudo parsing)",
        "ECCV 2020",
        None,
        None,
        62.8,
        52.3,
        "ISP paper",
    ),
    PublishedResult(
        "PAT",
        "learned part prototypes (transformer)",
        "CVPR 2021",
        95.4,
        88.0,
        64.5,
        53.6,
        "PFD_Net README",
    ),
    PublishedResult(
        "BPBReID",
        "learned attention supervised by parsing labels",
        "WACV 2023",
        95.7,
        89.4,
        75.1,
        62.5,
        "BPBReID paper (arXiv 2211.03679), HRNet-W32 384x128",
    ),
    PublishedResult(
        "KPR",
        "keypoint prompts + learned attention",
        "ECCV 2024",
        96.6,
        93.3,
        84.3,
        75.1,
        "KPR configs (Swin-B SOLIDER)",
    ),
)

# Global (holistic) baselines for context.
BASELINES: tuple[PublishedResult, ...] = (
    PublishedResult(
        "BoT (ResNet-50)",
        "none (global)",
        "CVPRW 2019",
        94.5,
        85.9,
        51.0,
        45.0,
        "reid-strong-baseline README; Occluded-Duke approximate",
    ),
    PublishedResult(
        "TransReID* (ViT-B)",
        "none (global + jigsaw patches)",
        "ICCV 2021",
        95.1,
        89.0,
        67.4,
        59.5,
        "TransReID README",
    ),
)


def results_table(rows: tuple[PublishedResult, ...] = PUBLISHED_RESULTS + BASELINES) -> str:
    """A Markdown table of the results (``-`` for figures not reported)."""

    def fmt(a: float | None, b: float | None) -> str:
        return "-" if a is None else f"{a:.1f} / {b:.1f}"

    lines = [
        "| method | parts from | venue | Market-1501 R1 / mAP | Occluded-Duke R1 / mAP | source |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.parts_from} | {r.venue} | {fmt(r.market_r1, r.market_map)} | "
            f"{fmt(r.occluded_duke_r1, r.occluded_duke_map)} | {r.source} |"
        )
    return "\n".join(lines)
