"""Tables and figures as a reader sees them."""
import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from ungerlib.infra import config, report  # noqa: E402


def test_markdown_tables_read_like_a_paper():
    idx = pd.MultiIndex.from_tuples([("Beauty", "valid_excl"), ("Beauty", "test_all")], names=["dataset", "ranking"])
    df = pd.DataFrame({"recall@10": [0.0988241, 0.0706], "ndcg@20": [0.06680, 0.04777], "best_epoch": [7.0, None],
                       "users": [22363, 22363]}, index=idx)
    md = report.markdown(df)
    assert "('Beauty'" not in md and "| Beauty " in md
    assert "validation, history excluded" in md and "test, all items" in md
    assert "0.0988 " in md and "0.0668 " in md and "0.06680" not in md  # 4 decimals
    assert "| dataset " in md and "Recall@10" in md and "NDCG@20" in md and "22,363" in md
    legend = md.strip().splitlines()[-1]
    assert "excl / history excluded = the user's history items removed from the ranking" in legend
    assert "Recall@k = " in legend and "all items = every item ranked" in legend


def test_relative_differences_are_percentages(tmp_path, monkeypatch):
    monkeypatch.setenv("UNGER_FIGURES", str(tmp_path))
    ours = pd.DataFrame({"recall@10": [0.0706]}, index=pd.Index(["Beauty"], name="dataset"))
    paper = pd.DataFrame({"recall@10": [0.0939]}, index=pd.Index(["Beauty"], name="dataset"))
    table = report.compare(ours, paper)
    assert abs(table[("rel_diff", "recall@10")].iloc[0] - (0.0706 - 0.0939) / 0.0939) < 1e-12  # CSV: a fraction
    report.save_table(table, "t", config.profile("smoke"), legend="paper = its Table 3")
    md = (tmp_path / "t.md").read_text()
    assert "-24.8 %" in md and "ours vs paper Recall@10" in md and "rel_diff" not in md
    assert "ours vs paper = (ours - paper) / paper" in md and "paper = its Table 3." in md
    assert ".;" not in md and ".." not in md
    assert report.markdown(ours, legend="Is it above?").rstrip().endswith(". Is it above?")  # no "?."
    assert pd.read_csv(tmp_path / "t.csv", header=[0, 1], index_col=0).iloc[0, 2] < 0  # the CSV keeps the number


def test_curves_figure_labels_panels_and_marks_the_selected_epoch():
    curves = pd.DataFrame([{"dataset": d, "run": r, "epoch": e, "loss_seq": 1 / e, "valid_recall@20": 0.1 * e}
                           for d in ("Beauty", "Toys") for r in ("a", "b") for e in (1, 2, 3)])
    fig = report.curves_figure(curves, {"loss_seq": "next-item loss", "valid_recall@20": "validation Recall@20"},
                               hue="run", selected={("Beauty", "a"): 2, "Toys": 3})
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["Beauty: next-item loss", "Beauty: validation Recall@20",
                                             "Toys: next-item loss", "Toys: validation Recall@20"]
    assert all(a.get_ylabel() in ("next-item loss", "validation Recall@20") for a in axes)
    stars = [l for l in axes[0].lines if l.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [2]
    assert any(list(l.get_xdata()) == [3, 3] for l in axes[2].lines)  # dashed line at Toys' selected epoch
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "selected epoch (best validation)" in labels and "a" in labels
