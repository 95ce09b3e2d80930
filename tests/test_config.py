import pytest

from visionclip.config import describe, load_profile, parse_override
from visionclip.errors import ConfigError


@pytest.mark.parametrize("name", ["ci", "cpu"])
def test_shipped_profiles_validate(name):
    p = load_profile(name)
    assert p.name == name
    assert p.train.batch_size >= 2


def test_override_wins_and_none_means_profile_value():
    p = load_profile("ci", {"train.lr": 0.5, "train.epochs": None})
    assert p.train.lr == 0.5
    assert p.train.epochs == load_profile("ci").train.epochs


@pytest.mark.parametrize("override, needle", [
    ({"train.lrr": 1}, "unknown key 'lrr'"),
    ({"trian.lr": 1}, "unknown section 'trian'"),
    ({"train.lr": "fast"}, "train.lr: expected a number"),
    ({"train.batch_size": 1}, "train.batch_size: expected >= 2"),
    ({"train.loss": "hinge"}, "expected one of"),
    ({"train.augment": "yes"}, "expected true/false"),
])
def test_bad_overrides_name_the_field(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_profile("ci", override)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles"):
        load_profile("no_such_profile")


def test_parse_override_and_describe():
    assert parse_override("train.lr=3e-4") == ("train.lr", 3e-4)
    keys = [k for k, _, _ in describe()]
    assert "train.lr" in keys and "synth.corpus_size" in keys


def test_caption_settings_that_cannot_work_together_are_refused():
    with pytest.raises(ConfigError, match=r"paper.yaml: data.captions=release gives Chinese captions only.*"
                                          r"train.caption_language is 'both'"):
        load_profile("paper", {"train.caption_language": "both"})
    with pytest.raises(ConfigError, match=r"cpu.yaml: data.captions=both needs the release's diagnosticAdvice.*"
                                          r"synth.corpus_format: paper"):
        load_profile("cpu", {"data.captions": "both"})
    assert load_profile("cpu", {"data.captions": "both", "synth.corpus_format": "release"}).data.captions == "both"
    assert load_profile("cpu", {"data.captions": "both", "data.corpus_root": "/data/SynFundus-1M"}).data.captions == "both"
    paper = load_profile("paper")
    assert (paper.data.captions, paper.synth.corpus_format) == ("release", "release")
