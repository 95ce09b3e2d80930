"""Every figure builds from tiny inputs and carries a title and axis labels."""
import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from visionclip.eval.maps import umap_projection  # noqa: E402
from visionclip.paths import RunLayout  # noqa: E402
from visionclip.report import figures  # noqa: E402
from visionclip.eval.metrics import classification_report  # noqa: E402


def _labelled(fig) -> bool:
    """A title (on the axes or the figure) and both axis labels, none of them empty."""
    ax = fig.axes[0]
    title = ax.get_title() or (fig._suptitle.get_text() if fig._suptitle is not None else "")
    return bool(title.strip()) and bool(ax.get_xlabel().strip()) and bool(ax.get_ylabel().strip())


def test_labelled_rejects_a_figure_without_axis_labels():
    fig, ax = plt.subplots()
    ax.set_title("a title")
    assert not _labelled(fig)
    ax.set_xlabel("x")
    assert not _labelled(fig)
    ax.set_ylabel("y")
    assert _labelled(fig)
    plt.close(fig)


def _report(c=3, n=30, seed=0):
    r = np.random.default_rng(seed)
    return classification_report(np.arange(n) % c, r.dirichlet(np.ones(c), n), [f"类{i}" for i in range(c)],
                                 n_boot=50, seed=0)


def test_setup_fonts_puts_an_installed_cjk_font_first(monkeypatch):
    class Font:
        def __init__(self, name):
            self.name = name
    monkeypatch.setattr(figures.font_manager.fontManager, "ttflist", [Font("DejaVu Sans"), Font("Noto Sans CJK JP")])
    monkeypatch.setitem(figures.matplotlib.rcParams, "font.sans-serif", ["DejaVu Sans", "Arial"])
    assert figures.setup_fonts() == "Noto Sans CJK JP"
    assert figures.matplotlib.rcParams["font.sans-serif"][:2] == ["Noto Sans CJK JP", "DejaVu Sans"]
    assert figures.matplotlib.rcParams["axes.unicode_minus"] is False


def test_setup_fonts_without_a_cjk_font_changes_nothing(monkeypatch):
    class Font:
        def __init__(self, name):
            self.name = name
    monkeypatch.setattr(figures.font_manager.fontManager, "ttflist", [Font("DejaVu Sans")])
    monkeypatch.setitem(figures.matplotlib.rcParams, "font.sans-serif", ["DejaVu Sans", "Arial"])
    assert figures.setup_fonts() is None
    assert figures.matplotlib.rcParams["font.sans-serif"] == ["DejaVu Sans", "Arial"]


def test_metric_figures(tmp_path):
    rep = _report()
    for fig in (figures.confusion_matrix_figure(rep["confusion_matrix"], rep["classes"]),
                figures.sensitivity_specificity_figure(rep)):
        assert _labelled(fig)
        fig.savefig(tmp_path / "f.png")
    for ds in ("fives", "refuge"):
        res = {f"{lang}_{mode}": {"language": lang, "mode": mode, "report": _report(seed=i)}
               for i, (lang, mode) in enumerate([("zh", "plain"), ("zh", "ek"), ("en", "plain"), ("en", "ek")])}
        res["chance"] = {"report": _report(seed=9)}
        path = RunLayout(tmp_path).eval_json(ds)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"dataset": ds, "results": res}))
    for compare in ("mode", "language"):
        fig = figures.prompt_comparison_figure(tmp_path, compare)
        assert len(fig.axes[0].patches) == 8 and "prompts" in fig.axes[0].get_title()


def test_umap_with_prototypes():
    r = np.random.default_rng(0)
    emb = r.normal(size=(40, 8))
    protos = r.normal(size=(3, 8))
    proj = umap_projection(emb, protos, seed=1)
    again = umap_projection(emb, protos, seed=1)
    assert proj[0].shape == (40, 2) and proj[1].shape == (3, 2)
    assert np.allclose(proj[0], again[0])  # seeded
    fig = figures.umap_figure(emb, np.arange(40) % 3, "DR grade", protos, ["a", "b", "c"], projection=proj)
    assert fig.axes[0].get_xlabel() == "UMAP 1"


def test_curves_fewshot_and_retrieval_grid(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"step": s, "loss": 5 - s * 0.1, "lr": 1e-3, "logit_scale": 14 + s})
                               for s in range(5)))
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"step": 4, "i2t_top1_label_set": 0.1, "val_loss": 4.0, "chance": 0.3,
                               "val_images": 32}) + "\n")
    fig = figures.training_curves_figure(train, val)
    assert len(fig.axes) == 4
    fs = {"refuge": {"curve": [{"k": 1, "aca_mean": 0.6, "aca_sd": 0.1}, {"k": 4, "aca_mean": 0.7, "aca_sd": 0.05}],
                     "zero_shot_aca": {"value": 0.65}}}
    assert figures.fewshot_figure(fs).axes[0].get_xlabel().startswith("shots")
    img = tmp_path / "a.png"
    Image.new("RGB", (20, 16), (200, 50, 50)).save(img)
    fig = figures.retrieval_examples_figure([str(img)], ["一张眼底照片"], [[str(img), str(img)]])
    assert len(fig.axes) == 3
    with pytest.raises(Exception, match="not found"):
        figures.training_curves_figure(tmp_path / "missing.jsonl")


def test_paper_table_figure(tmp_path):
    from visionclip.eval.table import write_table

    ours = [{"model": "VisionCLIP (this run)", "source": "synthetic stand-in",
             "scores": {"messidor2": {"value": 0.5, "lo": 0.4, "hi": 0.6}}}]
    write_table(ours, tmp_path)
    fig = figures.paper_table_figure(tmp_path / "eval" / "table.json")
    assert len(fig.axes[0].patches) == 6 * 3 and fig.axes[0].get_ylabel().startswith("ACA")
