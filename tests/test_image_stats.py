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
    tree = {"tortuosity", "branching"}
    assert all(np.isfinite(v) for k, v in plain.items() if not k.startswith("vessel") and k not in tree)  # no vessels
    assert plain["red"] == pytest.approx(200, abs=3) and plain["green"] == pytest.approx(100, abs=3)
    assert 15 < plain["hue"] < 30                    # an orange between red (0) and yellow (60)
    assert plain["falloff"] == pytest.approx(1.0, abs=0.02)
    assert image_statistics(_eye(falloff=0.5))["falloff"] < 0.8
    lined = image_statistics(_eye(vessels=6))
    assert lined["vessel_fraction"] > 0.01 and lined["vessel_contrast"] > 0.3
    assert image_statistics(_eye(vessels=6, vessel_depth=0.2))["vessel_contrast"] < lined["vessel_contrast"]
    assert image_statistics(_eye(colour=(200, 150, 40)))["hue"] > plain["hue"]  # more yellow


def _tree(size=128, wave=0.0, crossings=0, taper=1.0, disc_radius=0):
    """An even orange disk with dark vessels drawn as discs along paths: a horizontal one (a sine
    of amplitude `wave` px), `crossings` vertical ones across it; the horizontal one `taper` times
    as wide at the left, where a bright disc of `disc_radius` px sits just above it, as at the right."""
    yy, xx = np.indices((size, size))
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2 - 2)
    img = np.zeros((size, size, 3), np.float32) + np.array([200, 100, 40], np.float32)
    if disc_radius:
        img[np.hypot(yy - size / 2 + disc_radius + 3, xx - size / 5) < disc_radius] = (250, 220, 170)
    dark = np.zeros((size, size), bool)
    for x in np.arange(size // 8, 7 * size // 8, 0.25):
        y = size / 2 + wave * np.sin(x / 6)
        w = 1.0 + (taper - 1.0) * (7 * size / 8 - x) / (3 * size / 4)  # half-width, wider towards the disc
        dark |= np.hypot(yy - y, xx - x) <= w
    for k in range(crossings):
        x0 = size // 3 + k * size // (2 * max(crossings, 1))
        dark |= (np.abs(xx - x0) <= 1) & (np.abs(yy - size / 2) < size / 4)
    img[dark] *= 0.5
    img += np.random.default_rng(0).normal(0, 2, img.shape)
    img[r > 1] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def test_the_vessel_tree_statistics_measure_its_shape():
    straight, wavy = image_statistics(_tree()), image_statistics(_tree(wave=5))
    assert straight["tortuosity"] == pytest.approx(1.0, abs=0.05)
    assert wavy["tortuosity"] > straight["tortuosity"] + 0.1   # a sine of this amplitude and period: 1.16
    assert straight["branching"] < 0.5 and image_statistics(_tree(crossings=3))["branching"] > 1  # 3 on 2.3 diameters
    disc = dict(size=256, disc_radius=20)  # vessels 3 to 7 px wide: the map's top-hat (10 px) holds them
    assert image_statistics(_tree(taper=3.0, **disc))["vessel_taper"] > 1.25 > image_statistics(_tree(**disc))["vessel_taper"]
    assert image_statistics(_tree(**disc))["disc_size"] == pytest.approx(40 / 252, abs=0.03)  # disc diameter / field diameter


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
    assert table.loc["blue", "inside"] == 0 and table.loc["red", "inside"] > 0.5   # no real blue among the renders
