"""Image statistics of real and rendered eyes: each one moves the way its name says on images built for it."""
import numpy as np
import pytest

from visionclip.data.image_stats import STATISTICS, compare_sets, image_statistics


def _eye(size=128, colour=(200, 100, 40), falloff=0.0, vessels=0, vessel_depth=0.5, seed=0):
    yy, xx = np.indices((size, size))
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2 - 2)
    img = np.zeros((size, size, 3), np.float32)
    shade = 1.0 - falloff * np.clip(r, 0, 1) ** 2
    for c in range(3):
        img[..., c] = colour[c] * shade
    rng = np.random.default_rng(seed)
    for _ in range(vessels):
        y0 = rng.integers(size // 4, 3 * size // 4)
        img[y0:y0 + 2, size // 8:7 * size // 8] *= 1 - vessel_depth
    img += rng.normal(0, 3, img.shape)  # a little sensor noise, as every photograph has
    img[r > 1] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def test_every_statistic_is_computed_and_moves_as_named():
    plain = image_statistics(_eye())
    assert set(plain) == set(STATISTICS)
    assert all(np.isfinite(v) for k, v in plain.items() if not k.startswith("vessel"))  # no vessels drawn
    assert plain["red"] == pytest.approx(200, abs=3) and plain["green"] == pytest.approx(100, abs=3)
    assert 15 < plain["hue"] < 30                    # an orange between red (0) and yellow (60)
    assert plain["falloff"] == pytest.approx(1.0, abs=0.02)
    assert image_statistics(_eye(falloff=0.5))["falloff"] < 0.8
    lined = image_statistics(_eye(vessels=6))
    assert lined["vessel_fraction"] > 0.01 and lined["vessel_contrast"] > 0.3
    assert image_statistics(_eye(vessels=6, vessel_depth=0.2))["vessel_contrast"] < lined["vessel_contrast"]
    assert image_statistics(_eye(colour=(200, 150, 40)))["hue"] > plain["hue"]  # more yellow


def test_an_empty_frame_gives_no_numbers():
    assert all(np.isnan(v) for v in image_statistics(np.zeros((64, 64, 3), np.uint8)).values())


def test_compare_sets_ranks_the_largest_gap_first_and_measures_spread():
    real = [image_statistics(_eye(colour=(200, 100, 20 + 8 * k), falloff=0.3, vessels=5, seed=k)) for k in range(6)]
    rendered = [image_statistics(_eye(colour=(200, 100, 90), falloff=0.3, vessels=5, seed=k)) for k in range(6)]
    table = compare_sets({"real": real, "rendered": rendered}, reference="real").set_index("statistic")
    assert table.index[0] in ("blue", "hue", "saturation")   # the rendered eyes here differ in blue alone
    assert list(table["gap (reference IQRs)"]) == sorted(table["gap (reference IQRs)"], reverse=True)
    assert table.loc["blue", "gap (reference IQRs)"] > 2 and table.loc["blue", "real median"] < table.loc["blue", "rendered median"]
    assert (table.drop(index=["blue", "hue", "saturation"])["gap (reference IQRs)"] < 0.1).all()
    assert table.loc["blue", "spread ratio"] < 0.2   # every rendered eye has the same blue
