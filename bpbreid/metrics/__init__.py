"""Re-identification metrics: part-based distances with visibility, CMC and mAP.

Pure functions of features: nothing here knows about models, loaders or training. One
module per job, as in torchreid's ``metrics/``:

* :mod:`~bpbreid.metrics.distance` - :func:`part_based_distance`, the BPBReID test-time
  distance. Every test embedding (the foreground embedding and the K part embeddings by
  default) is compared on its own; a query-gallery pair averages the distances of the
  embeddings *visible in both* images.
* :mod:`~bpbreid.metrics.rank` - :func:`evaluate_rank`, CMC and mAP under the Market-1501
  protocol, vectorized (no compile step), giving the same numbers as torchreid's reference
  implementation; :func:`evaluate_chunked`, distance and ranking one block of queries at a
  time, for galleries whose full distance matrix would not fit in memory.
* :mod:`~bpbreid.metrics.rerank` - :func:`re_ranking`, k-reciprocal re-ranking.
* :mod:`~bpbreid.metrics.flat` - :func:`flatten_part_embeddings`, one ``[N, P * D]`` vector
  per image whose cosine distance approximates the part-based one (for trackers).

Example::

    distmat = part_based_distance(q_feats, g_feats, q_vis, g_vis)   # [Nq, Ng]
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    print(f"rank-1 {cmc[0]:.1%}  mAP {mAP:.1%}")

Reference:
    Somers et al., "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023 (arXiv 2211.03679), Sec. 3.5: test-time distance averaged
    over the parts visible in both images.
    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015: the Market-1501
    protocol (gallery images of the query's identity taken by the query's camera are ignored).
"""

from __future__ import annotations

from bpbreid.metrics.distance import METRICS, part_based_distance
from bpbreid.metrics.flat import flatten_part_embeddings
from bpbreid.metrics.rank import RankDetails, evaluate_chunked, evaluate_rank
from bpbreid.metrics.rerank import re_ranking

__all__ = [
    "METRICS",
    "RankDetails",
    "evaluate_chunked",
    "evaluate_rank",
    "flatten_part_embeddings",
    "part_based_distance",
    "re_ranking",
]
