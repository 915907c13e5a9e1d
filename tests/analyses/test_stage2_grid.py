"""The Stage II lever rows and the profiles' defaults stay in step."""
import pytest

from ungerlib.infra import artefacts, config
from ungerlib.analyses import stage2_grid


@pytest.mark.parametrize("profile", config.PROFILES)
def test_profile_defaults_are_the_adopted_row(profile):
    s2 = config.profile(profile).stage2
    assert {f: getattr(s2, f) for f in stage2_grid.LEVER_FIELDS} == stage2_grid.STAGE2_LEVERS[stage2_grid.ADOPTED]


def test_rows_are_distinct_models_and_name_every_lever():
    cfg = config.profile("smoke")
    keys = {artefacts.key_hash("stage2", stage2_grid.lever_config(cfg, r)) for r in stage2_grid.STAGE2_LEVERS}
    assert len(keys) == len(stage2_grid.STAGE2_LEVERS)
    for row, settings in stage2_grid.STAGE2_LEVERS.items():
        assert set(settings) == set(stage2_grid.LEVER_FIELDS), row
    assert stage2_grid.LITERAL.startswith("A paper-literal") and stage2_grid.ADOPTED in stage2_grid.STAGE2_LEVERS


def test_a_row_means_the_same_model_whatever_the_profile_defaults():
    """Rows pin every lever, so changing a profile default never re-keys (retrains) a row."""
    cfg = config.profile("cpu", "Beauty")
    other = cfg.replace(stage2={"history_tokens": "item", "decoder_tokens": "level", "valid_children": False})
    for row in (stage2_grid.LITERAL, stage2_grid.SCREEN_BEST):
        assert stage2_grid.lever_config(cfg, row) == stage2_grid.lever_config(other, row)


def test_unknown_row_is_a_clear_error():
    with pytest.raises(config.ConfigError, match="unknown Stage II lever row"):
        stage2_grid.lever_config(config.profile("smoke"), "Z = nothing")


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_adopted_row_at_full_budget_is_the_profile_default_run(profile):
    """The full-budget confirmation reuses the default Stage II artefact instead of training it again,
    and the other confirmed rows are distinct runs at the profile's own number of epochs."""
    cfg = config.profile(profile, "Beauty")
    key = lambda c: artefacts.key_hash("stage2", c)
    assert key(stage2_grid.lever_config(cfg, stage2_grid.ADOPTED, stage2_grid.FULL)) == key(cfg)
    assert stage2_grid.ADOPTED in stage2_grid.CONFIRM and set(stage2_grid.CONFIRM) <= set(stage2_grid.STAGE2_LEVERS)
    assert stage2_grid.CONFIRM == (stage2_grid.LITERAL, stage2_grid.SCREEN_BEST, stage2_grid.ADOPTED)
    full = [stage2_grid.lever_config(cfg, r, stage2_grid.FULL) for r in stage2_grid.CONFIRM]
    assert len({key(c) for c in full}) == len(stage2_grid.CONFIRM)
    assert all(c.stage2.epochs == cfg.stage2.epochs for c in full)


def test_the_paper_literal_row_has_no_item_tables():
    """Row A is the paper's model: codes only (per-level tokens, code-sum history), no per-item rows."""
    a = stage2_grid.STAGE2_LEVERS[stage2_grid.LITERAL]
    assert a["history_tokens"] == "codes" and a["decoder_tokens"] == "level"
    assert stage2_grid.STAGE2_LEVERS[stage2_grid.ADOPTED]["decoder_tokens"] == "node"
