"""predict's readability checks: Platt calibration fitted on held-out renderings, stored beside the model."""
import shutil

import numpy as np
import pytest
import torch

from test_eval_fixtures import fundus_image, save_tiny_model
from visionclip.data.records import CorpusRecord
from visionclip.data.transforms import Preprocess
from visionclip.errors import CheckpointError
from visionclip.eval import checks
from visionclip.eval.predict import predict
from visionclip.eval.zeroshot import zero_shot_scores
from visionclip.pretrained import load_clip
from visionclip.schema import COLUMNS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    save_tiny_model(d, image_size=32)
    return d


def test_platt_recovers_a_known_logistic_relation():
    rng = np.random.default_rng(0)
    s = rng.normal(0, 2, 20000)
    labels = (rng.random(s.size) < 1 / (1 + np.exp(-(1.5 * s - 0.7)))).astype(int)
    fit = checks._platt(s, labels)
    assert fit["a"] == pytest.approx(1.5, abs=0.08) and fit["b"] == pytest.approx(-0.7, abs=0.08)
    assert fit["brier"] < fit["brier_of_prevalence"] and fit["auc"] > 0.8
    probs, calibrated = checks.calibrated_probabilities({"is_fundus": s}, {"zh": {"is_fundus": fit}}, "zh",
                                                        prior="fitted")
    assert calibrated == {"is_fundus": True}
    for lo in (0.1, 0.5, 0.8):  # calibrated: predicted and observed frequencies agree bin by bin
        inside = (probs["is_fundus"] > lo) & (probs["is_fundus"] < lo + 0.1)
        assert labels[inside].mean() == pytest.approx(probs["is_fundus"][inside].mean(), abs=0.03)


def test_even_prior_takes_the_fitted_prevalence_out_by_bayes_rule():
    """Fitted on a val split that is 95% fundus, the even-prior probability is that of a balanced
    sample drawn from the same score distributions: frequencies there agree bin by bin."""
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(2.0, 1.5, 19000), rng.normal(-2.0, 1.5, 1000)
    s, labels = np.r_[pos, neg], np.r_[np.ones(19000, int), np.zeros(1000, int)]
    fit = checks._platt(s, labels)
    even, _ = checks.calibrated_probabilities({"is_fundus": s}, {"zh": {"is_fundus": fit}}, "zh")
    fitted, _ = checks.calibrated_probabilities({"is_fundus": s}, {"zh": {"is_fundus": fit}}, "zh", prior="fitted")
    assert np.all(even["is_fundus"] < fitted["is_fundus"])
    balanced = np.r_[np.arange(1000), 1000 + rng.choice(19000, 1000, replace=False)]  # negatives, then a draw of positives
    p, y = np.r_[even["is_fundus"][19000:], even["is_fundus"][:19000]][balanced], np.r_[np.zeros(1000), np.ones(19000)][balanced]
    for lo in (0.2, 0.4, 0.6):
        inside = (p > lo) & (p < lo + 0.2)
        assert y[inside].mean() == pytest.approx(p[inside].mean(), abs=0.08)
    readable, _ = checks.calibrated_probabilities({"is_macular_readable": s}, {"zh": {"is_macular_readable": fit}}, "zh")
    assert np.array_equal(readable["is_macular_readable"], fitted["is_fundus"])   # readability keeps the fitted prior
    with pytest.raises(ValueError):
        checks.calibrated_probabilities({"is_fundus": s}, {"zh": {"is_fundus": fit}}, "zh", prior="corpus")


def test_uncalibrated_checks_are_the_two_prompt_softmax():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(5, 8)); img /= np.linalg.norm(img, axis=1, keepdims=True)
    protos = rng.normal(size=(2, 8)); protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    scores = checks.check_scores(img, {"is_fundus": protos}, 20.0)
    probs, calibrated = checks.calibrated_probabilities(scores, None, "en")
    assert calibrated == {"is_fundus": False}
    np.testing.assert_allclose(probs["is_fundus"], zero_shot_scores(img, protos, 20.0)[:, 0], rtol=1e-5)


def _records(tmp_path, n=24):
    out = []
    for i in range(n):
        fundus = i % 3 != 0
        path = tmp_path / f"{i}.jpg"
        if fundus:
            fundus_image(path, (40 + i, 40), shape="circle")
        else:  # a flat frame, as the corpus's non-fundus kinds
            from PIL import Image
            Image.new("RGB", (40, 40), (200, 200 - 5 * i, 180)).save(path)
        labels = {c: 0 for c in COLUMNS if c != "file_name"}
        labels.update(file_name=path.name, is_fundus=int(fundus), is_macular_readable=int(fundus),
                      is_optic_disc_readable=int(fundus), is_retinal_region_readable=1)
        out.append(CorpusRecord(path, labels, "", "", "cam"))
    return out


def test_calibration_is_fitted_stored_and_used_by_predict(model_dir, tmp_path, capsys):
    torch.manual_seed(0)
    model, tokenizer = load_clip(model_dir)
    records = _records(tmp_path)
    fit = checks.calibrate_checks(model, tokenizer, records, Preprocess(32), seed=0, batch_size=8)
    # every check whose labels vary is fitted, in both languages; one that does not vary is not
    assert set(fit["zh"]) == set(fit["en"]) == {"is_fundus", "is_macular_readable", "is_optic_disc_readable"}
    assert fit["zh"]["is_fundus"]["images"] == 24 and fit["zh"]["is_fundus"]["positives"] == 16
    table = checks.calibration_table(fit)
    assert len(table) == 6 and table["auc"].between(0, 1).all()
    # a model that read Chinese captions only is calibrated in Chinese only
    model.training_captions = {"zh": "generated"}
    zh_only = checks.calibrate_checks(model, tokenizer, records, Preprocess(32), seed=0, batch_size=8)
    assert "zh" in zh_only and "en" not in zh_only

    calibrated_dir = tmp_path / "calibrated"
    shutil.copytree(model_dir, calibrated_dir)
    checks.save_calibration(calibrated_dir, {"en": {"is_fundus": {"a": 0.0, "b": 2.0, "images": 100, "positives": 80}}})
    photo = tmp_path / "photo.jpg"
    fundus_image(photo, (50, 44), shape="circle")
    df = predict(calibrated_dir, [photo], classes=["normal", "glaucoma"], language="en")
    # under an even prior: the fit's log prior odds, log(80 / 20), taken out
    assert df["p_is_fundus"].iloc[0] == pytest.approx(1 / (1 + np.exp(-(2.0 - np.log(4.0)))))
    assert "is_macular_readable" in df.attrs["uncalibrated_checks"] and "is_fundus" not in df.attrs["uncalibrated_checks"]
    assert "is_macular_readable" in capsys.readouterr().err

    (calibrated_dir / checks.CALIBRATION_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="check_calibration.json"):
        predict(calibrated_dir, [photo], classes=["normal", "glaucoma"], language="en")
