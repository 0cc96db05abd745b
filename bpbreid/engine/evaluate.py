"""Former name of :mod:`bpbreid.engine.evaluation`: the same module object, under the old path.

``from bpbreid.engine.evaluate import extract_features`` keeps working; new code imports
from :mod:`bpbreid.engine.evaluation`. ``bpbreid.engine.evaluate`` itself stays the
function :func:`bpbreid.engine.evaluation.evaluate` (see :mod:`bpbreid.engine`).
"""

import sys

from bpbreid.engine import evaluation

sys.modules[__name__] = evaluation
