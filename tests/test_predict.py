"""predict on a folder of photographs of any size or crop, one of them corrupt; bad input."""
import pandas as pd
import pytest

from test_eval_fixtures import TINY, fundus_image, save_tiny_model
from visionclip.eval import zeroshot
from visionclip.data import transforms
from visionclip.errors import CheckpointError, ConfigError, DataError
from visionclip.cli import main as cli_main
from visionclip.eval.predict import predict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    save_tiny_model(d, image_size=32)
    return d


@pytest.fixture()
def folder(tmp_path):
    f = tmp_path / "photos"
    fundus_image(f / "a_full.jpg", (48, 40), shape="circle")
    fundus_image(f / "b_cut.png", (60, 30), shape="cut")
    fundus_image(f / "sub" / "c_rect.jpg", (25, 70), shape="rect")
    (f / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (f / "notes.txt").write_text("not an image: ignored")
    return f


def test_folder_with_corrupt_file(model_dir, folder, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    df = predict(model_dir, folder, classes=["normal", "glaucoma", "cataract"], language="en", out_csv=out)
    assert len(df) == 4 and (df["status"] == "ok").sum() == 3
    bad = df[df["status"] != "ok"]
    assert bad["path"].iloc[0].endswith("broken.jpg") and bad["status"].iloc[0].startswith("unreadable")
    assert "broken.jpg" in capsys.readouterr().err
    ok = df[df["status"] == "ok"]
    probs = ok[["p_normal", "p_glaucoma", "p_cataract"]]
    assert ((probs.sum(axis=1) - 1).abs() < 1e-5).all()
    for flag in ("is_fundus", "is_macular_readable", "is_optic_disc_readable", "is_retinal_region_readable"):
        assert ok[f"p_{flag}"].between(0, 1).all()
    assert pd.read_csv(out).shape == df.shape


def test_dataset_prompts_and_cli(model_dir, folder, tmp_path):
    df = predict(model_dir, [folder / "a_full.jpg"], dataset="refuge", language="zh")
    assert list(df.columns[3:5]) == ["p_no glaucoma", "p_glaucoma"]
    out = tmp_path / "cli.csv"
    assert cli_main(["predict", "--checkpoint", str(model_dir), "--dataset", "fives", "--out", str(out),
                     str(folder)]) == 0
    assert len(pd.read_csv(out)) == 4


def test_workers_and_device_give_the_same_predictions(model_dir, folder, tmp_path, capsys):
    here = predict(model_dir, folder, classes=["normal", "glaucoma"], language="en")
    workers = predict(model_dir, folder, classes=["normal", "glaucoma"], language="en", device="cpu", num_workers=2)
    pd.testing.assert_frame_equal(here, workers)
    out = tmp_path / "cli.csv"
    assert cli_main(["predict", "--checkpoint", str(model_dir), "--dataset", "refuge", "--device", "auto",
                     "--workers", "1", "--out", str(out), str(folder)]) == 0
    assert (pd.read_csv(out)["status"] == "ok").sum() == 3
    capsys.readouterr()
    assert cli_main(["predict", "--checkpoint", str(model_dir), "--dataset", "refuge", "--workers", "-1",
                     str(folder)]) == 2
    assert capsys.readouterr().err.strip() == ("visionclip predict: error: --workers: expected 0 or more worker "
                                               "processes, got -1")


def test_bad_input(model_dir, folder, tmp_path):
    with pytest.raises(DataError, match="do not match dataset 'refuge'"):
        predict(model_dir, folder, classes=["normal", "glaucoma"], dataset="refuge")
    with pytest.raises(ConfigError, match="unknown dataset"):
        predict(model_dir, folder, dataset="idrid")
    with pytest.raises(ConfigError, match="--classes"):
        predict(model_dir, folder)
    with pytest.raises(DataError, match="nowhere.jpg"):
        predict(model_dir, tmp_path / "nowhere.jpg", classes=["a", "b"])
    with pytest.raises(DataError, match="none of the 1 images"):
        predict(model_dir, [folder / "broken.jpg"], classes=["a", "b"])
    other = tmp_path / "other"  # a checkpoint of another configuration
    save_tiny_model(other, cfg=TINY.__class__(**{**TINY.__dict__, "embed_dim": 8}))
    (other / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError):
        predict(other, folder, classes=["a", "b"])


def test_flair_exact_flag_reaches_prototypes_and_padding(model_dir, folder, tmp_path, monkeypatch):
    """`visionclip predict --flair-exact` reaches the prototypes (classes and readability checks) and
    the preprocessing; without it both keep the defaults (renormalised, centred)."""
    seen = {"prototypes": [], "padding": []}
    protos, pad = zeroshot.class_prototypes, transforms.preprocess_fundus

    def record_protos(*args, flair_exact=False, **kw):
        seen["prototypes"].append(flair_exact)
        return protos(*args, flair_exact=flair_exact, **kw)

    def record_pad(img, size, flair_exact=False):
        seen["padding"].append(flair_exact)
        return pad(img, size, flair_exact)

    monkeypatch.setattr(zeroshot, "class_prototypes", record_protos)
    monkeypatch.setattr(transforms, "preprocess_fundus", record_pad)
    images = [str(folder / "a_full.jpg"), str(folder / "b_cut.png")]
    for flag, expected in (([], False), (["--flair-exact"], True)):
        seen["prototypes"].clear()
        seen["padding"].clear()
        assert cli_main(["predict", "--checkpoint", str(model_dir), "--dataset", "refuge", *flag,
                         "--out", str(tmp_path / "p.csv"), *images]) == 0
        assert seen["prototypes"] == [expected] * 5  # the classes and the four readability checks
        assert seen["padding"] == [expected] * 2
