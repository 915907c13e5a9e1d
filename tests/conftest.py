import os
import tempfile

import pytest

# Tests never touch the real artefact store or figures folder.
_TMP = tempfile.mkdtemp(prefix="ungerlib-test-")
os.environ.setdefault("UNGER_ARTEFACTS", os.path.join(_TMP, "artefacts"))
os.environ.setdefault("UNGER_FIGURES", os.path.join(_TMP, "figures"))

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def smoke():
    from ungerlib.infra import config

    return config.profile("smoke")


@pytest.fixture(scope="module")
def small_unger():
    """A tiny Stage II model on 60 random items (8-d, K = 4 codes, smoke settings), untrained, with 40
    random 6-item histories: ``(table, model, hist [40, 6], emb [60, 8])``. Decoding tests read it."""
    import numpy as np

    from ungerlib.model import codes
    from ungerlib.infra import config
    from ungerlib.model.stage2 import UNGER

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    table = codes.hierarchical_kmeans(emb, K=4, seed=0)
    torch.manual_seed(0)
    model = UNGER(table, 8, config.profile("smoke").stage2, max_hist=6).eval()
    hist = rng.integers(0, len(table), size=(40, 6))
    return table, model, hist, emb
