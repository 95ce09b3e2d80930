"""Evaluation at the paper's scale: the device it runs on, decoding workers, and the seeded
subsamples that maps and few-shot probes take of sets above a stated size."""
import numpy as np
import pytest
import torch

from visionclip.config import load_profile
from visionclip.errors import ConfigError
from visionclip.eval import fewshot, maps
from visionclip.eval.embed import embed_images, save_embeddings
from visionclip.precision import choose_device
from visionclip.report import figures, tables
from visionclip.seeding import subsample


def test_subsample_is_seeded_sorted_and_everything_when_small():
    assert subsample(5, 10, 0, "x").tolist() == [0, 1, 2, 3, 4]
    a = subsample(1000, 100, 3, "x")
    assert len(set(a)) == 100 and (np.diff(a) > 0).all() and a.max() < 1000
    assert np.array_equal(a, subsample(1000, 100, 3, "x"))
    assert not np.array_equal(a, subsample(1000, 100, 4, "x"))
    assert not np.array_equal(a, subsample(1000, 100, 3, "y"))


def test_choose_device_names_the_field():
    assert choose_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert choose_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"):
        choose_device("tpu", "--device")
    with pytest.raises(ConfigError, match=r"^eval.device: cuda:99 asked for, but this machine has \d+ GPU"):
        choose_device("cuda:99")


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"image": torch.full((3, 4, 4), i * 30, dtype=torch.uint8)}


class _MeanModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def encode_image(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 1 - m], 1)


def test_embedding_in_workers_gives_the_same_embeddings_in_order():
    model = _MeanModel()
    here = embed_images(model, _Images(), batch_size=3, precision="fp32")
    workers = embed_images(model, _Images(), batch_size=3, precision="fp32", num_workers=2)
    assert np.array_equal(here, workers) and len(np.unique(here[:, 0])) == 7


def _benchmark_embeddings(run_dir, name, n, seed):
    g = np.random.default_rng(seed)
    label = np.arange(n) % 3
    image = np.eye(3, dtype=np.float32)[label] + 0.3 * g.standard_normal((n, 3)).astype(np.float32)
    save_embeddings(run_dir, name, image=image, label=label, domain=np.array(["cam"] * n),
                    path=np.array([f"{i}.png" for i in range(n)]), class_names=np.array(["a", "b", "c"]))


def test_fewshot_scores_large_sets_on_a_seeded_subsample(tmp_path, monkeypatch):
    profile = load_profile("tiny")
    _benchmark_embeddings(tmp_path, "fives_dev", 30, 0)
    _benchmark_embeddings(tmp_path, "fives_test", 90, 1)
    small = fewshot.run_fewshot(profile, tmp_path, ["fives"])["fives"]
    assert (small["scored_images"], small["test_images"]) == (90, 90)
    monkeypatch.setattr(fewshot, "FEWSHOT_MAX_SCORED", 40)
    large = fewshot.run_fewshot(profile, tmp_path, ["fives"])
    assert (large["fives"]["scored_images"], large["fives"]["test_images"]) == (40, 90)
    assert large == fewshot.run_fewshot(profile, tmp_path, ["fives"])  # seeded
    assert large["fives"]["curve"] != small["curve"]
    assert set(tables.fewshot_table(large)["probe scored on"]) == {"a seeded 40 of 90 images"}
    assert set(tables.fewshot_table({"fives": small})["probe scored on"]) == {"all 90 images"}


def test_maps_draw_a_seeded_subsample_of_large_sets_and_say_so(tmp_path, monkeypatch):
    _benchmark_embeddings(tmp_path, "fives_test", 50, 0)
    save_embeddings(tmp_path, "prototypes", fives=np.eye(3, dtype=np.float32), fives_names=np.array(["a", "b", "c"]))
    drawn = []
    monkeypatch.setattr(figures, "umap_projection",  # the map's points, without UMAP's compile time
                        lambda img, protos, seed: drawn.append(len(img)) or (img[:, :2], protos[:, :2]))
    every = figures.benchmark_maps(tmp_path, "fives", seed=1)
    assert drawn == [50] and "seeded" not in every["class"].axes[0].get_title()
    monkeypatch.setattr(maps, "MAP_MAX_IMAGES", 20)
    some = figures.benchmark_maps(tmp_path, "fives", seed=1)
    assert drawn == [50, 20]
    assert "fives (test) embeddings (a seeded 20 of 50 images)" in some["class"].axes[0].get_title()
