"""Manifests: validated, FLAIR's expert-knowledge descriptions exactly, checksums verified."""
from __future__ import annotations

import pytest

from visionclip.data import manifests
from visionclip.data.manifests import load_manifest, validate_manifest, verify_checksums
from visionclip.errors import DataError
from visionclip.io import sha256_file
from visionclip.schema import DR_GRADE_NAMES

# DESIGN.md §3 (FLAIR, flair/modeling/dictionary.py), per benchmark class in label order.
DR5 = {
    "no diabetic retinopathy": ["no diabetic retinopathy", "no microaneurysms"],
    "mild diabetic retinopathy": ["only few microaneurysms"],
    "moderate diabetic retinopathy": ["many exudates near the macula", "many haemorrhages near the macula",
                                      "retinal thickening near the macula", "hard exudates",
                                      "cotton wool spots", "few severe haemorrhages"],
    "severe diabetic retinopathy": ["venous beading", "many severe haemorrhages",
                                    "intraretinal microvascular abnormality"],
    "proliferative diabetic retinopathy": ["preretinal or vitreous haemorrhage", "neovascularization"],
}
GLAUCOMA = ["optic nerve abnormalities", "abnormal size of the optic cup", "anomalous size in the optic disc"]
EXPECTED = {
    "messidor2": DR5,
    "messidor": {k: v for k, v in DR5.items() if not k.startswith("proliferative")},
    "fives": {"normal": ["healthy", "no findings", "no lesion signs", "no glaucoma", "no retinopathy"],
              "age related macular degeneration": ["many small drusen", "few medium-sized drusen",
                                                   "large drusen", "macular degeneration"],
              "diabetic retinopathy": ["diabetic retinopathy"],
              "glaucoma": GLAUCOMA},
    "refuge": {"no glaucoma": ["no glaucoma"], "glaucoma": GLAUCOMA},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_manifests_carry_flair_prompts(name):
    m = load_manifest(name)
    assert {c["name_en"]: c["descriptions_en"] for c in m["classes"]} == EXPECTED[name]
    assert list(EXPECTED[name]) == [c["name_en"] for c in m["classes"]]
    assert m["templates"]["en"] == "A fundus photograph of [CLS]"
    assert "[CLS]" in m["templates"]["zh"] and "translation" in m["translation_note"]
    for c in m["classes"]:
        assert len(c["descriptions_zh"]) == len(c["descriptions_en"])
        assert all(any("\u4e00" <= ch <= "\u9fff" for ch in d) for d in c["descriptions_zh"] + [c["name_zh"]])


def test_dr_names_match_the_schema_and_synfundus_licence():
    m = load_manifest("messidor2")
    assert [(c["name_en"], c["name_zh"]) for c in m["classes"]] == [DR_GRADE_NAMES[g] for g in range(5)]
    assert "CC BY-NC-SA 4.0" in load_manifest("synfundus")["licence"]
    assert manifests.manifest_names() == ["cn_clip_vocab", "devset", "fives", "messidor", "messidor2",
                                          "natural_photos", "refuge", "synfundus"]


def test_validation_rejects_bad_manifests():
    good = load_manifest("refuge")
    with pytest.raises(DataError, match=r"unknown key.*'licence_typo'"):
        validate_manifest({**good, "licence_typo": 1}, "x.yaml")
    with pytest.raises(DataError, match=r"missing key.*licence"):
        validate_manifest({k: v for k, v in good.items() if k != "licence"}, "x.yaml")
    bad_cls = dict(good, classes=[{**good["classes"][0], "descriptions_zh": []}])
    with pytest.raises(DataError, match=r"classes\[0\].descriptions_zh"):
        validate_manifest(bad_cls, "x.yaml")
    with pytest.raises(DataError, match=r"templates.zh must contain \[CLS\]"):
        validate_manifest(dict(good, templates={"en": "[CLS]", "zh": "眼底"}), "x.yaml")
    with pytest.raises(DataError, match=r"no manifest .*idrid.*known"):
        load_manifest("idrid")
    load_manifest("refuge")["classes"].clear()          # a copy: the cache is not mutated
    assert load_manifest("refuge")["classes"]


def test_verify_checksums(tmp_path):
    (tmp_path / "a").mkdir()
    f = tmp_path / "a" / "x.bin"
    f.write_bytes(b"hello")
    files = {"a/x.bin": sha256_file(f)}
    assert verify_checksums(tmp_path, files) == 1
    assert verify_checksums(tmp_path, {"files": files, "generator": "v1"}) == 1
    f.write_bytes(b"hellO")
    with pytest.raises(DataError, match=r"x.bin: sha256 .* does not match"):
        verify_checksums(tmp_path, files)
    with pytest.raises(DataError, match=r"not a path inside"):
        verify_checksums(tmp_path, {"../etc/passwd": "0"})
