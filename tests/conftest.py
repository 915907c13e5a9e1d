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
    from ungerlib import config

    return config.profile("smoke")
