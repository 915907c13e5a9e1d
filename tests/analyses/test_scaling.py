"""Figure 6 (ungerlib.analyses.scaling): which runs each depth needs, and the paper's two sentences
tested on a planted table."""
import pandas as pd
import pytest

from ungerlib.analyses import scaling as S
from ungerlib.infra import config as C

PAPER, TABLES = list(S.FORMS)


def _table(values):
    """values: {row: {depth: test ndcg@20}} -> a points() table."""
    out = []
    for row, by_depth in values.items():
        for d, v in by_depth.items():
            out.append({"row": row, "layers": d, "encoder layers": 0 if row == S.HSTU else 1,
                        "test ndcg@20": v, "test recall@20": 2 * v})
    return pd.DataFrame(out).set_index(["row", "layers", "encoder layers"])


def test_depths_per_profile_and_bad_depths_rejected():
    assert S.depths("cpu") == [1, 2, 4, 8] and S.depths("cpu", (16,)) == [1, 2, 4, 8, 16]
    assert S.depths("paper")[-1] == 32
    with pytest.raises(C.ConfigError, match="at least 1"):
        S.depths("cpu", (0,))
    with pytest.raises(C.ConfigError, match="unknown profile"):
        S.depths("laptop")


def test_a_point_differs_from_its_row_in_the_layers_only():
    from ungerlib.analyses import code_kinds

    cfg = C.profile("cpu", dataset="Beauty")
    for row, form in S.FORMS.items():
        base = code_kinds.config(cfg, "unified", form).to_dict()
        for d in (1, 8):
            c = S.unger_config(cfg, row, d).to_dict()
            assert c["stage2"].pop("dec_layers") == d and c["stage2"].pop("enc_layers") == 1
            base2 = {**base, "stage2": {k: v for k, v in base["stage2"].items() if k not in ("dec_layers", "enc_layers")}}
            assert c == base2
    assert S.unger_config(cfg, TABLES, 4) == cfg  # the profile's default is the item-tables row at 1 + 4
    with pytest.raises(C.ConfigError, match="unknown UNGER row"):
        S.unger_config(cfg, "HSTU", 2)


def test_runs_name_every_row_at_every_depth():
    cfg = C.profile("smoke")
    runs = S.runs(cfg)
    assert len(runs) == 3 * len(S.depths("smoke"))
    hstu = [extra["params"]["blocks"] for kind, _, _, extra in runs if kind == "baseline.HSTU"]
    assert hstu == S.depths("smoke")
    assert len(S.runs(cfg, encoder_point=True)) == len(runs) + 1


def test_verdicts_follow_the_planted_curves():
    t = _table({PAPER: {1: .02, 2: .03, 4: .04}, TABLES: {1: .05, 2: .04, 4: .06},
                S.HSTU: {1: .03, 2: .035, 4: .03}})
    v = S.verdicts(t)
    assert v.loc[PAPER, "keeps improving"] == "yes" and v.loc[PAPER, "best depth"] == 4
    assert v.loc[PAPER, "beats HSTU at every depth"] == "no" and v.loc[PAPER, "above HSTU at"] == "1 of 3 depths"
    assert v.loc[TABLES, "keeps improving"] == "no"  # fell from 1 to 2 layers
    assert v.loc[TABLES, "beats HSTU at every depth"] == "yes"
    assert v.loc[TABLES, "largest gain over HSTU"] == pytest.approx(1.0)  # 0.06 against 0.03
    assert v.loc[PAPER, "HSTU best depth"] == 2
    text = S.verdicts_text(v)
    assert "keeps improving with depth: **no**" in text and "+100.0%" in text
