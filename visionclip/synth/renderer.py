"""Procedural colour fundus photographs: the Med-AIGC stand-in.

`render_fundus(row, seed, index, size, camera)` is a pure function of its inputs. It works in two
steps: `plan_fundus` draws every random choice (anatomy, lesions, camera settings) and returns the
scene plus its measurements; `rasterise` turns the scene into pixels. The writers use the plan alone
to rebuild measurements of files that already exist, so a resumed render need not redraw them.

Speed: textures (choroid, tessellation, sensor noise) are generated once per process from fixed
seeds and reused through random crops and flips; vessels and lesions are drawn with PIL on 8-bit
mask layers and blended in float32 numpy, one layer per lesion colour.
"""
from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DataError
from ..seeding import derive_seed
from . import clinical as C
from .cameras import CameraProfile, get_camera
from .nonfundus import CORPUS_KINDS, STAMP_COLOURS, render_nonfundus

# Lesion colours (linear RGB in 0..1, before the camera).
COLOURS = {
    "red": (0.42, 0.04, 0.03),
    "yellow": (0.98, 0.88, 0.45),
    "drusen": (0.93, 0.80, 0.50),
    "white": (0.96, 0.92, 0.86),
    "dark": (0.18, 0.09, 0.05),
    "pale": (0.95, 0.82, 0.62),
    "artery": (0.72, 0.20, 0.10),
    "vein": (0.42, 0.08, 0.06),
}
# Domain randomisation of the corpus (plan_fundus(randomise=True)), on top of each camera's look,
# for a share of its photographs: ranges widened (generator 1.4) until the real dev photographs' colour,
# brightness, fall-off, sharpness, noise, disc contrast and disc size lie inside the rendered 5th-95th
# percentiles on most statistics (notebook 01 measures it), and held back where they would clip the
# optic disc's green and blue (the stand-ins lost accuracy: every photograph randomised, REFUGE-like
# zero-shot fell to chance with exposures to 2.1 before green and blue were capped).
PHOTOMETRIC = {
    "share": 0.5,                         # of the corpus's photographs; the rest keep the camera's look
    "white_balance_log_sd": (0.4, 0.5),   # green and blue gains relative to red: exp(N(0, sd))
    "red_log_sd": 0.2,                    # red gain exp(-|N(0, sd)|): below 1 only, so red never clips more
    "white_balance_max": (1.6, 1.6),      # no gain above these
    "blue_dropout_p": 0.15,               # a share whose blue channel is almost dark, as many cameras'
    "blue_dropout": (0.0, 0.25),          # blue gain of those
    "green_blue_exposure_max": 1.5,       # exposure x gain: the rim's green and blue never clip, so the
                                          # pale cup stays visible on it (glaucoma's sign)
    "blue_over_green_max": 1.25,
    "exposure": (1.0, 2.1),
    "gamma": (0.5, 1.6),                  # times the camera's: brightens or darkens without clipping
    "falloff": (0.05, 0.95),              # illumination at the rim: 1 - falloff
    "light_offset": 0.12,                 # the light's centre, off the image centre by up to this share
    "retina_gain": (0.45, 1.1),           # the retina darker (a bright disc on a dark fundus) or lighter than
                                          # the disc; the disc itself never brighter, so its cup never clips
    "desaturate": (-0.7, 0.35),           # mix towards grey (negative: more saturated)
    "blur_px_at_128": (0.0, 0.3),
    "defocus_p": 0.0,                     # a share out of focus: 0.2 cost the stand-ins their accuracy
    "defocus_px_at_128": (0.6, 2.5),      # Gaussian sigma of those
    "noise": (0.0, 3.0),                  # sensor noise sigma, 0..255
    "resolution": (0.6, 0.9), "resolution_p": 0.1,    # sometimes captured smaller and upscaled
    "jpeg_quality": (70, 95),
    "fov_dd": (6.0, 12.0),                # field of view in disc diameters, log-uniform: 30-degree cameras and
                                          # zoomed crops (~5.5) to wide fields (~14); unrandomised 7-8
    "haze_p": 0.0,                        # a share seen through a light veil (flare, a dirty lens): washed out;
                                          # 0.15 with defocus 0.2 cost the stand-ins their accuracy
    "haze": (0.1, 0.35),                  # mixed towards a pale peach by this much; readable (no blur with it)
}

HAZE_COLOUR = (0.95, 0.72, 0.55)  # the veil's colour at full illumination

# Vessels are translucent: in photographs a vein darkens the green channel by about a fifth to a
# third of the background's level, an artery less (data.image_stats' vessel_contrast on real eyes).
VESSEL_OPACITY = {"artery": 0.40, "vein": 0.55}


# ---- per-process caches ---------------------------------------------------------------------------

def _fbm(r: np.random.Generator, n: int, octaves: tuple[int, ...], falloff: float) -> np.ndarray:
    out = np.zeros((n, n), np.float32)
    amp = 1.0
    for k in octaves:
        small = r.standard_normal((k, k)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(small, "F").resize((n, n), Image.BICUBIC))
        amp *= falloff
    out -= out.mean()
    return out / (out.std() + 1e-6)


@functools.lru_cache(maxsize=8)
def _textures(size: int) -> dict[str, Any]:
    """Textures at 1.5x the output side, generated from fixed seeds (same in every process)."""
    n = int(size * 1.5) + 2
    r = np.random.default_rng(20240611)
    choroid = [_fbm(r, n, (6, 12, 24, 48, 96), 0.6) for _ in range(3)]
    tess = []
    for _ in range(2):
        # zero crossings: a network of choroidal vessels, a third to half a disc diameter apart
        f = _fbm(r, n, (36, 72), 0.5)
        tess.append(np.exp(-(f / 0.7) ** 2).astype(np.float32))
    noise = r.standard_normal((3, n, n)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return {"n": n, "choroid": choroid, "tess": tess, "noise": noise, "yy": yy, "xx": xx}


@functools.lru_cache(maxsize=64)
def _camera_field(size: int, name: str) -> np.ndarray:
    """FOV mask x vignetting for one camera at one size (float32, size x size)."""
    cam = get_camera(name)
    t = _textures(size)
    c = (size - 1) / 2
    rr = np.sqrt((t["xx"] - c) ** 2 + (t["yy"] - c) ** 2) / (size / 2)
    radius = cam.fov_radius
    edge = 1.5 / (size / 2)                                  # ~1.5 px soft rim
    mask = np.clip((radius - rr) / edge, 0, 1)
    if cam.fov_shape in ("circle_cut", "rect"):
        ay = np.abs(t["yy"] - c) / (size / 2)
        mask *= np.clip((cam.cut - ay) / edge, 0, 1)
    vign = 1 - cam.vignette * np.clip(rr / min(radius, 1.2), 0, 1.2) ** 2.5
    return (mask * vign).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _kernel(sigma_q: int) -> ImageFilter.Kernel:
    """A 3x3 Gaussian kernel for sub-pixel softness."""
    sigma = sigma_q / 20
    half = 1
    ax = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma * sigma))
    g /= g.sum()
    return ImageFilter.Kernel((2 * half + 1, 2 * half + 1), g.ravel().tolist(), scale=1.0)


def _soften(im: Image.Image, sigma: float) -> Image.Image:
    if sigma < 0.25:
        return im
    if sigma <= 0.8:   # a 3x3 kernel is cheaper than GaussianBlur here; a 5x5 one is not
        return im.filter(_kernel(int(round(sigma * 20))))
    return im.filter(ImageFilter.GaussianBlur(sigma))


def _crop(arr: np.ndarray, r: np.random.Generator, size: int, n: int) -> np.ndarray:
    y, x = r.integers(0, n - size, 2)
    out = arr[..., y:y + size, x:x + size]
    k = int(r.integers(0, 4))
    if k & 1:
        out = out[..., ::-1, :]
    if k & 2:
        out = out[..., :, ::-1]
    return out


# ---- the plan: every random choice, in pixels and disc diameters ---------------------------------

def _u(r: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(r.uniform(lo_hi[0], lo_hi[1]))


def _count(r: np.random.Generator, spec: dict) -> int:
    lo, hi = spec["count"]
    if "p" in spec and r.random() >= spec["p"]:
        return 0
    return int(r.integers(max(lo, 1 if "p" in spec else lo), hi + 1))


def _sample_cdr(r: np.random.Generator, kind: str) -> float:
    d = C.CDR[kind]
    return float(np.clip(r.normal(d["mean"], d["sd"]), d["lo"], d["hi"]))


class _Recorder:
    """Collects lesions per source (dr, dme, amd, ...) for the measurements dict."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.m: dict[str, dict[str, dict[str, Any]]] = {}

    def add(self, source: str, kind: str, size_dd: float, item: tuple | None = None,
            fovea_dd: float | None = None) -> None:
        entry = self.m.setdefault(source, {}).setdefault(kind, {"count": 0, "size_dd": [size_dd, size_dd]})
        entry["count"] += 1
        if fovea_dd is not None:   # how far from the fovea the furthest one lies, in DD
            entry["max_fovea_dd"] = round(max(entry.get("max_fovea_dd", 0.0), fovea_dd), 4)
        entry["size_dd"] = [min(entry["size_dd"][0], size_dd), max(entry["size_dd"][1], size_dd)]
        if item is not None:
            self.items.append(item)


def _vessel_tree(r: np.random.Generator, disc: tuple[float, float], fovea: tuple[float, float],
                 dd: float, start_r: float, art_factor: float, vein_factor: float,
                 tortuous_quadrants: set[int], size: int, traction=None) -> list[dict]:
    """Arteries and veins leaving the disc: four arcades each, tapering, branching, avoiding the fovea."""
    tdir = 1.0 if fovea[0] > disc[0] else -1.0
    vessels: list[dict] = []
    # Quadrants: 0 superotemporal, 1 inferotemporal, 2 superonasal, 3 inferonasal.
    for q in range(4):
        temporal = q < 2
        up = q in (0, 2)
        for kind in ("vein", "artery"):
            w0 = dd * (0.10 if kind == "vein" else 0.075) * (vein_factor if kind == "vein" else art_factor)
            if kind == "vein" and q not in tortuous_quadrants:
                w0 = dd * 0.10
            ang_off = r.uniform(-0.15, 0.15) + (0.12 if kind == "artery" else -0.12)
            if temporal:
                theta = math.atan2(-1 if up else 1, tdir * 0.35) + ang_off
                target = math.atan2(-0.25 if up else 0.25, tdir)
                length = dd * r.uniform(5.5, 7.0)
            else:
                theta = math.atan2(-1 if up else 1, -tdir * 0.6) + ang_off
                target = math.atan2(-0.5 if up else 0.5, -tdir)
                length = dd * r.uniform(3.0, 4.5)
            tort = 0.25 if (kind == "vein" and q in tortuous_quadrants) else 0.08
            ox = disc[0] + tdir * dd * 0.02          # central vessels emerge on the nasal side of the cup
            _grow(r, vessels, kind, (ox + start_r * math.cos(theta), disc[1] + start_r * math.sin(theta)),
                  theta, target, w0, length, dd, fovea, tort, q, depth=0, size=size, traction=traction)
    return vessels


def _grow(r, vessels, kind, p, theta, target, w, length, dd, fovea, tort, q, depth, size, traction=None) -> None:
    step = dd * 0.22
    pts = [p]
    x, y = p
    n = max(2, int(length / step))
    turn = 0.0  # the bend carries over from step to step: smooth curves, not a zigzag
    for i in range(n):
        diff = math.atan2(math.sin(target - theta), math.cos(target - theta))
        turn = 0.6 * turn + r.normal(0, tort * 0.8)
        wobble = turn
        if traction is not None:
            # an epiretinal membrane pulls nearby vessels straight towards its centre
            tx, ty, tr = traction
            if (x - tx) ** 2 + (y - ty) ** 2 < (1.6 * tr) ** 2:
                pull = math.atan2(ty - y, tx - x)
                diff = 0.5 * diff + 0.5 * math.atan2(math.sin(pull - theta), math.cos(pull - theta))
                wobble = 0.0
        theta += 0.18 * diff + wobble
        x, y = x + step * math.cos(theta), y + step * math.sin(theta)
        # the foveal avascular zone: small vessels turn away from the fovea
        fx, fy = x - fovea[0], y - fovea[1]
        if fx * fx + fy * fy < (0.55 * dd) ** 2:
            break
        pts.append((x, y))
        if not (-0.1 * size < x < 1.1 * size and -0.1 * size < y < 1.1 * size):
            break
        if depth < 4 and i > 2 and r.random() < 0.2 * (1 + depth * 0.4) and w > dd * 0.025:
            side = 1 if r.random() < 0.5 else -1
            if depth == 0 and q < 2 and r.random() < 0.5:     # macular branches point at the fovea
                bt = math.atan2(fovea[1] - y, fovea[0] - x) + r.normal(0, 0.3)
            else:
                bt = theta + side * r.uniform(0.5, 1.0)
            _grow(r, vessels, kind, (x, y), bt, bt + side * r.uniform(0, 0.6), w * r.uniform(0.55, 0.75),
                  length * r.uniform(0.25, 0.5), dd, fovea, tort, q, depth + 1, size, traction)
    vessels.append({"kind": kind, "pts": pts, "w0": w, "w1": max(w * 0.45, dd * 0.02), "q": q})


def plan_fundus(row: dict[str, Any], seed: int, index: int, size: int, camera: str | CameraProfile,
                nonfundus_kinds: tuple[str, ...] = CORPUS_KINDS, randomise: bool = False) -> dict[str, Any]:
    """Every random choice of one image, and its measurements (sizes in DD and px).

    randomise: draw this photograph's look (PHOTOMETRIC: white balance, exposure, gamma,
    illumination, saturation, blur, noise, resolution, compression) around its camera's, as the
    corpus does (domain randomisation); nothing drawn there carries a label."""
    cam = camera if isinstance(camera, CameraProfile) else get_camera(camera)
    # the camera is not a key: the same (seed, index) is the same eye under any camera
    r = np.random.default_rng(derive_seed(seed, index, "fundus", size))
    q_lo, q_hi = cam.jpeg_quality
    scene: dict[str, Any] = {"size": size, "camera": cam.name, "seed": seed, "index": index,
                             "jpeg_quality": int(r.integers(q_lo, q_hi + 1))}
    meas: dict[str, Any] = {"camera": cam.name, "jpeg_quality": scene["jpeg_quality"]}
    if int(row.get("is_fundus", 1)) == 0:
        kind = nonfundus_kinds[int(r.integers(0, len(nonfundus_kinds)))]
        scene["nonfundus"] = kind
        meas["nonfundus_kind"] = kind
        return {"scene": scene, "measurements": meas}

    g = C.GEOMETRY
    half = size / 2
    dd = size * 0.94 / _u(r, g["fov_diameter_dd"])
    # the photograph's look from a generator of its own, so the unrandomised stand-ins keep their pixels;
    # a randomised eye keeps its labels, disc and cup, while its vessels and lesions, drawn in another
    # field of view, are another draw within the same clinical bounds
    photo = None
    if randomise:
        rp = np.random.default_rng(derive_seed(seed, index, "photometric", size))
        if rp.random() < PHOTOMETRIC["share"]:
            photo = _photometric(rp, size)
            dd = size * 0.94 / photo["fov_dd"]   # another camera's field of view or a zoomed crop
    off = _u(r, g["fovea_offset_dd"]) * dd
    a = r.uniform(0, 2 * math.pi)
    fovea = (half + off * math.cos(a), half + off * math.sin(a) * 0.6)
    right_eye = int(row.get("eye_side", 0)) == 0
    dist = _u(r, g["disc_fovea_distance_dd"]) * dd
    disc = (fovea[0] + (dist if right_eye else -dist), fovea[1] - r.uniform(0.05, 0.35) * dd)
    aspect = _u(r, g["disc_aspect"])
    grade = int(row.get("dr_grade", 0))
    flags = {k: int(row.get(k, 0)) for k in ("is_amd", "is_aon", "is_crp", "is_dme", "is_em", "is_gc",
                                              "is_htr", "is_pm", "is_rvo")}
    if flags["is_pm"]:
        aspect = _u(r, C.LESIONS["pm"]["disc_aspect"])
    cdr = _sample_cdr(r, "glaucoma" if flags["is_gc"] else "normal")
    notch = (r.uniform(0.08, 0.15) if flags["is_gc"] and r.random() < C.GLAUCOMA_NOTCH_P else 0.0)
    pallor = _u(r, C.LESIONS["aon"]["disc_pallor"]) if flags["is_aon"] else r.uniform(0.0, 0.12)
    pigment = r.uniform(0, 1)
    scene.update(dd=dd, fovea=fovea, disc=disc, aspect=aspect, cdr=cdr, notch=notch,
                 notch_dir=(1 if r.random() < 0.6 else -1), pallor=pallor, pigment=pigment,
                 tess=(_u(r, C.LESIONS["pm"]["tessellation_strength"]) if flags["is_pm"]
                       else r.uniform(0, 0.45) * (pigment < 0.45)),
                 exposure=_u(r, cam.exposure), hue=r.normal(0, 0.03, 3).tolist(),
                 tex_seed=int(r.integers(0, 2**31)))
    rec = _Recorder()

    # vessels
    art = _u(r, C.LESIONS["htr"]["arteriole_calibre_factor"]) if flags["is_htr"] else 1.0
    rvo_q: set[int] = set()
    vein = 1.0
    if flags["is_rvo"]:
        vein = _u(r, C.LESIONS["rvo"]["vein_dilation_factor"])
        central = r.random() < C.LESIONS["rvo"]["central_p"]
        rvo_q = {0, 1, 2, 3} if central else {int(r.integers(0, 2))}
        scene["rvo_type"] = "central" if central else "branch"
        meas["rvo_type"] = scene["rvo_type"]
    disc_r = dd / 2
    # vessels emerge inside the cup; in glaucoma they climb out at its edge and bend there
    start_r = disc_r * (cdr if flags["is_gc"] else 0.6 * cdr)
    erm = None
    if flags["is_em"]:   # drawn before the vessels: the membrane straightens the vessels it holds
        spec = C.LESIONS["erm"]["membrane_sheen"]
        erm_s = _u(r, spec["size_dd"])
        ang = r.uniform(0, 2 * math.pi)
        rad = dd * 0.3 * math.sqrt(r.uniform(0, 1))
        erm = (fovea[0] + rad * math.cos(ang), fovea[1] + rad * math.sin(ang), erm_s * dd / 2)
    vessels = _vessel_tree(r, disc, fovea, dd, start_r, art, vein, rvo_q, size, traction=erm)
    scene["vessels"] = vessels
    meas.update(dd_px=round(dd, 3), cdr=round(cdr, 4), disc_xy=[round(v, 2) for v in disc],
                fovea_xy=[round(v, 2) for v in fovea], disc_aspect=round(aspect, 4),
                disc_pallor=round(pallor, 4), artery_calibre_factor=round(art, 4),
                vein_dilation_factor=round(vein, 4), glaucoma_notch=bool(notch > 0))

    rng_pts = r

    # a narrower field than the plain 7-8 DD keeps every lesion inside it: the grade's count, denser
    field_dd = 0.45 * photo["fov_dd"] if photo is not None else math.inf

    def retina_point(max_dd: float = 3.3, near=None, within=None, quadrant=None) -> tuple[float, float]:
        max_dd = min(max_dd, field_dd)
        for _ in range(50):
            if near is not None:
                ang = rng_pts.uniform(0, 2 * math.pi)
                rad = within * math.sqrt(rng_pts.uniform(0, 1))
                x, y = near[0] + rad * math.cos(ang), near[1] + rad * math.sin(ang)
            else:
                ang = rng_pts.uniform(0, 2 * math.pi) if quadrant is None else \
                    rng_pts.uniform(0, math.pi / 2) + quadrant * math.pi / 2
                rad = dd * max_dd * math.sqrt(rng_pts.uniform(0.02, 1))
                x, y = half + rad * math.cos(ang), half + rad * math.sin(ang)
            if (x - disc[0]) ** 2 + (y - disc[1]) ** 2 > (disc_r * 1.1) ** 2:
                return x, y
        return x, y

    def vessels_where(ok, kinds) -> list[dict]:
        """The vessels of `kinds` that pass `ok`; in a zoomed field, where the trunks leave the image
        after a few steps, the longest of them."""
        return ([v for v in vessels if v["kind"] in kinds and ok(v)]
                or [max((v for v in vessels if v["kind"] in kinds), key=lambda v: len(v["pts"]))])

    def vessel_point(kinds=("vein",), quadrants=None) -> tuple[tuple[float, float], float]:
        cands = vessels_where(lambda v: (quadrants is None or v["q"] in quadrants) and len(v["pts"]) > 3, kinds)
        for _ in range(20):   # a point on the vessel, inside the field of view
            v = cands[int(rng_pts.integers(0, len(cands)))]
            pts = v["pts"] if len(v["pts"]) > 1 else v["pts"] * 2
            i = int(rng_pts.integers(1, len(pts) - 1)) if len(pts) > 2 else 0
            (x0, y0), (x1, y1) = pts[i], pts[i + 1]
            if (x0 - half) ** 2 + (y0 - half) ** 2 < (0.85 * half) ** 2:
                break
        return (x0, y0), math.atan2(y1 - y0, x1 - x0)

    def beside_vessel(kinds=("vein",), quadrants=None) -> tuple[tuple[float, float], float]:
        # flame haemorrhages lie in the nerve fibre layer next to a vessel, along its course
        (x, y), ang = vessel_point(kinds, quadrants)
        off = rng_pts.choice([-1, 1]) * dd * rng_pts.uniform(0.12, 0.4)
        return (x - math.sin(ang) * off, y + math.cos(ang) * off), ang + rng_pts.normal(0, 0.15)

    def lesions(source: str, kind: str, spec: dict, layer: str, shape: str, place) -> None:
        for _ in range(_count(r, spec)):
            s = _u(r, spec["size_dd"])
            p, ang = place()
            fd = math.hypot(p[0] - fovea[0], p[1] - fovea[1]) / dd if source in ("dme", "amd") else None
            rec.add(source, kind, s, (layer, shape, p[0], p[1], s * dd, ang, _u(r, C.CONTRAST.get(kind, (0.5, 0.8)))),
                    fovea_dd=fd)

    anywhere = lambda: (retina_point(), r.uniform(0, math.pi))  # noqa: E731

    if grade > 0:
        spec = C.LESIONS[f"dr{grade}"]
        lesions("dr", "microaneurysm", spec["microaneurysm"], "red", "dot", anywhere)
        if "dot_blot_haemorrhage" in spec:
            quads = iter(range(4)) if spec["dot_blot_haemorrhage"].get("quadrants") else None

            def blot_place():
                q = next(quads, None) if quads is not None else None
                return retina_point(quadrant=q), r.uniform(0, math.pi)
            lesions("dr", "dot_blot_haemorrhage", spec["dot_blot_haemorrhage"], "red", "blot", blot_place)
        if "hard_exudate" in spec:
            centre = retina_point(max_dd=2.5)
            lesions("dr", "hard_exudate", spec["hard_exudate"], "yellow", "waxy",
                    lambda: (retina_point(near=centre, within=dd * 1.2), 0.0))
        if "cotton_wool_spot" in spec:
            lesions("dr", "cotton_wool_spot", spec["cotton_wool_spot"], "white", "fluffy",
                    lambda: (retina_point(near=disc, within=dd * 3.0), r.uniform(0, math.pi)))
        if "venous_beading" in spec:
            for _ in range(_count(r, spec["venous_beading"])):
                s = _u(r, spec["venous_beading"]["size_dd"])
                cands = vessels_where(lambda v: v["w0"] > dd * 0.06 and len(v["pts"]) > 12, ("vein",))
                v = cands[int(r.integers(0, len(cands)))]
                i0 = int(r.integers(2, len(v["pts"]) - 8)) if len(v["pts"]) > 10 else 0
                n = max(2, int(s / 0.22))
                rec.add("dr", "venous_beading", s, ("vein", "beads", v["pts"][i0:i0 + n], v["w0"] * 0.8))
        if "irma" in spec:
            lesions("dr", "irma", spec["irma"], "red", "tuft", lambda: (retina_point(max_dd=2.8), 0.0))
        if "neovascularisation" in spec:
            def nv_place():
                if r.random() < 0.5:
                    return (disc[0] + r.uniform(-0.3, 0.3) * dd, disc[1] + r.uniform(-0.3, 0.3) * dd), 0.0
                return vessel_point(("vein", "artery"))[0], 0.0
            lesions("dr", "neovascularisation", spec["neovascularisation"], "red", "frond", nv_place)
        if "preretinal_haemorrhage" in spec:
            lesions("dr", "preretinal_haemorrhage", spec["preretinal_haemorrhage"], "red", "boat",
                    lambda: (retina_point(near=disc, within=dd * 2.5), 0.0))
    if flags["is_dme"] and grade > 0:
        spec = C.LESIONS["dme"]["hard_exudate"]
        circinate = r.random() < spec["circinate_p"]
        ring_c = retina_point(near=fovea, within=dd * 0.5)
        ring_r = r.uniform(0.25, 0.45) * dd

        def dme_place():
            if circinate:
                a = r.uniform(0, 2 * math.pi)
                rr = ring_r * r.uniform(0.8, 1.2)
                p = (ring_c[0] + rr * math.cos(a), ring_c[1] + rr * math.sin(a))
            else:
                p = retina_point(near=fovea, within=dd * 0.95)
            # never further than the contract allows
            dx, dy = p[0] - fovea[0], p[1] - fovea[1]
            lim = spec["within_dd_of_fovea"] * dd * 0.98
            dist_ = math.hypot(dx, dy)
            if dist_ > lim:
                p = (fovea[0] + dx * lim / dist_, fovea[1] + dy * lim / dist_)
            return p, 0.0
        lesions("dme", "hard_exudate", spec, "yellow", "waxy", dme_place)
        meas["dme_circinate"] = bool(circinate)
    if flags["is_amd"]:
        spec = C.LESIONS["amd"]
        lesions("amd", "drusen", spec["drusen"], "drusen", "soft",
                lambda: (retina_point(near=fovea, within=dd * spec["drusen"]["within_dd_of_fovea"]), 0.0))
        lesions("amd", "pigment_clump", spec["pigment_clump"], "dark", "dot",
                lambda: (retina_point(near=fovea, within=dd * 0.8), 0.0))
        lesions("amd", "geographic_atrophy", spec["geographic_atrophy"], "atrophy", "patch",
                lambda: (retina_point(near=fovea, within=dd * 0.3), r.uniform(0, math.pi)))
    if flags["is_htr"]:
        spec = C.LESIONS["htr"]
        lesions("htr", "flame_haemorrhage", spec["flame_haemorrhage"], "red", "flame",
                lambda: beside_vessel(("vein", "artery")))
        lesions("htr", "cotton_wool_spot", spec["cotton_wool_spot"], "white", "fluffy",
                lambda: (retina_point(near=disc, within=dd * 3.0), r.uniform(0, math.pi)))
        lesions("htr", "av_nicking", spec["av_nicking"], "nick", "nick", lambda: vessel_point(("vein",)))
    if flags["is_rvo"]:
        spec = C.LESIONS["rvo"]["flame_haemorrhage"]
        n_lo, n_hi = spec["count"]
        if len(rvo_q) == 1:
            n_hi = max(n_lo, n_hi // 2)
        lesions("rvo", "flame_haemorrhage", {"count": (n_lo, n_hi), "size_dd": spec["size_dd"]}, "red",
                "flame", lambda: beside_vessel(("vein",), rvo_q))
    if flags["is_crp"]:
        lesions("csc", "serous_detachment", C.LESIONS["csc"]["serous_detachment"], "csc", "csc",
                lambda: (retina_point(near=fovea, within=dd * 0.25), 0.0))
    if flags["is_em"]:
        rec.add("erm", "membrane_sheen", erm[2] * 2 / dd,
                ("erm", "erm", erm[0], erm[1], erm[2] * 2, r.uniform(0, math.pi), 0.5))
    if flags["is_pm"]:
        spec = C.LESIONS["pm"]
        tdir = 1.0 if fovea[0] > disc[0] else -1.0
        lesions("pm", "peripapillary_atrophy", spec["peripapillary_atrophy"], "ppa", "ppa",
                lambda: (disc, tdir))
        lesions("pm", "macular_atrophy", spec["macular_atrophy"], "atrophy", "patch",
                lambda: (retina_point(near=fovea, within=dd * 1.2), r.uniform(0, math.pi)))
    scene["lesions"] = rec.items
    meas["lesions"] = rec.m

    # readability defects, exactly where flagged
    defects = []
    if int(row.get("is_macular_readable", 1)) == 0:
        defects.append(("macula", fovea, dd * r.uniform(1.2, 1.6), str(r.choice(["blur", "shadow"]))))
    if int(row.get("is_optic_disc_readable", 1)) == 0:
        defects.append(("disc", disc, dd * r.uniform(1.0, 1.4), str(r.choice(["glare", "shadow", "blur"]))))
    if int(row.get("is_retinal_region_readable", 1)) == 0:
        defects.append(("retina", (half, half), size, str(r.choice(["opacity", "underexposed", "blur"]))))
    scene["defects"] = defects
    meas["defects"] = [f"{d[0]}:{d[3]}" for d in defects]

    # camera extras
    scene["blur"] = cam.blur * size / 256 * r.uniform(0.8, 1.2)
    scene["noise"] = cam.noise * r.uniform(0.7, 1.3)
    scene["stamp"] = (datetime(2015, 1, 1) + timedelta(minutes=int(r.integers(0, 5_000_000)))).strftime(
        "%Y-%m-%d %H:%M") if cam.overlay else ""
    scene["artefact_xy"] = (r.uniform(0.2, 0.8) * size, r.uniform(0.2, 0.8) * size)
    # cameras print their overlays in white, green or yellow; non-fundus frames carry them too
    scene["stamp_colour"] = STAMP_COLOURS[int(r.integers(0, len(STAMP_COLOURS)))]
    if photo is not None:
        scene["photo"] = photo
        scene["jpeg_quality"] = meas["jpeg_quality"] = photo["jpeg_quality"]
    return {"scene": scene, "measurements": meas}


def _photometric(r: np.random.Generator, size: int) -> dict[str, Any]:
    """One photograph's look, drawn from PHOTOMETRIC (see plan_fundus)."""
    g = PHOTOMETRIC
    exposure = _u(r, g["exposure"])
    cap = g["green_blue_exposure_max"] / exposure
    green, blue = np.minimum(np.exp(r.normal(0, g["white_balance_log_sd"])), g["white_balance_max"])
    if r.random() < g["blue_dropout_p"]:
        blue = _u(r, g["blue_dropout"])
    green = min(green, cap)
    blue = min(blue, green * g["blue_over_green_max"], cap)  # a pale disc turns yellow or white, never violet
    blur = _u(r, g["blur_px_at_128"])
    if r.random() < g["defocus_p"]:
        blur = _u(r, g["defocus_px_at_128"])
    red = float(np.exp(-abs(r.normal(0, g["red_log_sd"]))))
    return {"white_balance": [red, float(green), float(blue)],
            "exposure": exposure, "gamma": _u(r, g["gamma"]),
            "falloff": _u(r, g["falloff"]), "light_xy": (r.uniform(-1, 1, 2) * g["light_offset"] * size).tolist(),
            "retina_gain": _u(r, g["retina_gain"]),
            "haze": _u(r, g["haze"]) if r.random() < g["haze_p"] else 0.0,
            "desaturate": _u(r, g["desaturate"]), "blur": blur * size / 128,
            "noise": _u(r, g["noise"]),
            "resolution": _u(r, g["resolution"]) if r.random() < g["resolution_p"] else 1.0,
            "jpeg_quality": int(r.integers(g["jpeg_quality"][0], g["jpeg_quality"][1] + 1)),
            "fov_dd": float(np.exp(_u(r, np.log(g["fov_dd"]))))}


# ---- rasterisation ---------------------------------------------------------------------------------

def _blend(img: np.ndarray, alpha: np.ndarray, colour) -> None:
    """img (3,H,W) <- img*(1-a) + colour*a, in place."""
    for c in range(3):
        ch = img[c]
        ch -= alpha * (ch - colour[c])


def _outline(x: float, y: float, rx: float, ry: float, ang: float, r: np.random.Generator,
             jitter: float, n: int = 14) -> list[tuple[float, float]]:
    """An irregular closed outline around the ellipse (rx, ry): its radius wanders by up to `jitter` in
    two or three smooth lobes, about the ellipse's, so the patch keeps the ellipse's area on average."""
    phase, amp = r.uniform(0, 2 * math.pi, 2), r.uniform(0, jitter, 2) / 2
    ca, sa = math.cos(ang), math.sin(ang)
    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        f = 1 + amp[0] * math.sin(2 * a + phase[0]) + amp[1] * math.sin(3 * a + phase[1])
        u, v = rx * f * math.cos(a), ry * f * math.sin(a)
        pts.append((x + u * ca - v * sa, y + u * sa + v * ca))
    return pts


def _wander(x: float, y: float, heading: float, step: float, n: int, r: np.random.Generator,
            bend: float = 0.5) -> list[tuple[float, float]]:
    """A smooth tortuous path: the heading turns with momentum (small new vessels, not a zigzag)."""
    pts, turn = [(x, y)], 0.0
    for _ in range(n):
        turn = 0.6 * turn + r.normal(0, bend)
        heading += turn
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        pts.append((x, y))
    return pts


def _draw_lesion(d: ImageDraw.ImageDraw, item: tuple, r: np.random.Generator) -> None:
    """One lesion into its colour's layer (fill = how far it moves the colour). Shapes follow the
    signs' appearance in photographs; the size and place were drawn in plan_fundus."""
    layer, shape, x, y, s, ang, contrast = item
    v = int(255 * contrast)
    rad = max(s / 2, 0.5)
    if shape in ("dot", "waxy", "soft") and rad < 0.75:
        # sub-pixel lesions: one pixel at reduced intensity, as a sensor would see it
        d.point((round(x), round(y)), fill=int(v * min(1.0, (rad / 0.75) ** 2 + 0.3)))
    elif shape == "dot":   # a microaneurysm: a round red dot
        d.ellipse((x - rad, y - rad, x + rad, y + rad), fill=v)
    elif shape == "waxy":
        # a hard exudate: a waxy deposit with a crisp, irregular edge, sometimes with small satellites
        d.polygon(_outline(x, y, rad * 0.95, rad * r.uniform(0.8, 0.95), r.uniform(0, math.pi), r, 0.2, 10), fill=v)
        for _ in range(int(r.integers(0, 3))):
            a, rr = r.uniform(0, 2 * math.pi), rad * r.uniform(0.2, 0.35)
            cx, cy = x + (rad * 0.95 - rr) * math.cos(a), y + (rad * 0.95 - rr) * math.sin(a)   # at the edge
            d.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=int(v * r.uniform(0.8, 1.0)))
    elif shape == "soft":
        # a druse: a dome, brightest at its top, fading into the background at its edge
        for k, (f, w) in enumerate(((1.0, 0.5), (0.72, 0.8), (0.42, 1.0))):
            rr = rad * f
            d.polygon(_outline(x, y, rr, rr, 0.0, r, 0.12 if k == 0 else 0.0, 12), fill=int(v * w))
    elif shape == "blot":
        # a blot haemorrhage: an irregular dark-red patch, darkest in its core
        e = r.uniform(0.7, 1.0)
        d.polygon(_outline(x, y, rad, rad * e, ang, r, 0.22, 18), fill=int(v * 0.8))
        d.polygon(_outline(x + r.uniform(-0.2, 0.2) * rad, y + r.uniform(-0.2, 0.2) * rad,
                           rad * 0.6, rad * e * 0.6, ang, r, 0.2, 12), fill=v)
    elif shape == "fluffy":
        # a cotton-wool spot: a greyish-white patch with a feathered edge, built of small tufts
        d.polygon(_outline(x, y, rad * 0.8, rad * 0.65, ang, r, 0.4), fill=int(v * 0.45))
        for _ in range(int(r.integers(6, 11))):
            a, rr = r.uniform(0, 2 * math.pi), rad * 0.6 * math.sqrt(r.uniform(0, 1))
            cx, cy = x + rr * math.cos(a + ang), y + rr * math.sin(a + ang) * 0.8
            tr = rad * r.uniform(0.2, 0.4)
            d.ellipse((cx - tr, cy - tr, cx + tr, cy + tr), fill=int(v * r.uniform(0.55, 0.9)))
    elif shape == "flame":
        # a splinter haemorrhage in the nerve-fibre layer: a tapered lens striated along the fibres
        ca, sa = math.cos(ang), math.sin(ang)
        wd = max(0.6, s / 7)
        pts = []
        for k in range(12):
            tt = -1 + 2 * (k % 6) / 5 if k < 6 else 1 - 2 * (k % 6) / 5
            half_w = wd * math.sqrt(max(0.0, 1 - tt * tt)) * (1 if k < 6 else -1)
            pts.append((x + ca * rad * tt - sa * half_w, y + sa * rad * tt + ca * half_w))
        d.polygon(pts, fill=int(v * 0.75))
        for _ in range(int(r.integers(3, 6))):
            off, a = r.uniform(-0.8, 0.8) * wd, ang + r.normal(0, 0.06)
            l0, l1 = rad * r.uniform(0.5, 0.95), rad * r.uniform(0.5, 0.95)
            cx, cy = x - sa * off, y + ca * off
            d.line((cx - math.cos(a) * l0, cy - math.sin(a) * l0, cx + math.cos(a) * l1, cy + math.sin(a) * l1),
                   fill=int(v * r.uniform(0.8, 1.0)), width=max(1, round(wd * 0.5)))
    elif shape == "boat":
        # a preretinal haemorrhage: boat-shaped, the blood settled under a flat upper level
        e = rad * r.uniform(0.6, 0.8)
        d.chord((x - rad, y - e, x + rad, y + e), 0, 180, fill=int(v * 0.85))
        d.chord((x - rad * 0.8, y - e * 0.6, x + rad * 0.8, y + e * 0.75), 0, 180, fill=v)
    elif shape == "tuft":
        # IRMA: a few fine tortuous vessels within the retina, without the loops of new vessels
        for _ in range(int(r.integers(2, 5))):
            d.line(_wander(x, y, r.uniform(0, 2 * math.pi), rad * 0.14, int(r.integers(4, 8)), r, 0.45),
                   fill=int(v * 0.75), width=1)
    elif shape == "frond":
        # new vessels (NVD/NVE): a net of fine loops fanning out from where they arise
        for _ in range(int(r.integers(4, 9))):
            a = r.uniform(0, 2 * math.pi)
            rr = rad * r.uniform(0.2, 0.6)
            cx, cy = x + math.cos(a) * rr, y + math.sin(a) * rr
            lr = rad * r.uniform(0.15, 0.35)
            loop = _outline(cx, cy, lr, lr * r.uniform(0.5, 1.0), a, r, 0.45, 10)
            d.line([(x, y), *loop, loop[0]], fill=int(v * r.uniform(0.6, 0.9)), width=1)


def rasterise(scene: dict[str, Any], measurements: dict[str, Any] | None = None) -> Image.Image:
    size = scene["size"]
    cam = get_camera(scene["camera"])
    if "nonfundus" in scene:
        return render_nonfundus(scene["nonfundus"], scene["seed"], scene["index"], size)
    t = _textures(size)
    n = t["n"]
    r = np.random.default_rng(scene["tex_seed"])
    dd, fovea, disc = scene["dd"], scene["fovea"], scene["disc"]
    xx, yy = t["xx"], t["yy"]

    # background: pigmentation, choroidal texture, tessellation, macular pigment
    p = scene["pigment"]
    base = np.array([0.72 - 0.16 * p, 0.46 - 0.17 * p, 0.29 - 0.13 * p], np.float32) * (1 + np.array(scene["hue"], np.float32))
    tex = _crop(t["choroid"][int(r.integers(0, 3))], r, size, n)
    img = np.empty((3, size, size), np.float32)
    for c, amp in enumerate((0.05, 0.09, 0.10)):
        img[c] = base[c] * (1 + amp * tex)
    if scene["tess"] > 0.02:
        # tessellation: orange-red choroidal vessels over dark-brown intervascular pigment
        k = scene["tess"]
        vessels_c = _crop(t["tess"][int(r.integers(0, 2))], r, size, n)
        between = (1 - vessels_c) * (0.55 * k)
        on = vessels_c * (0.35 * k)
        for c, (dark, red) in enumerate(((0.40, 0.75), (0.13, 0.22), (0.07, 0.10))):
            img[c] -= between * (img[c] - dark) + on * (img[c] - red)
    d2f = (xx - fovea[0]) ** 2 + (yy - fovea[1]) ** 2
    mac = np.exp(d2f * (-1 / (2 * (0.75 * dd) ** 2)))
    d2d = (xx - disc[0]) ** 2 + (yy - disc[1]) ** 2
    glow = np.exp(d2d * (-1 / (2 * (1.4 * dd) ** 2)))
    halo = np.exp(d2d * (-1 / (2 * (0.8 * dd) ** 2)))  # the yellowish sheen around the disc
    img *= 1 - mac[None] * np.array([0.28, 0.45, 0.45], np.float32)[:, None, None]
    img *= 1 + 0.12 * glow
    img *= 1 + halo[None] * np.array([0.10, 0.28, 0.22], np.float32)[:, None, None]

    # atrophy / ppa / csc / erm: broad layers under the vessels
    for item in scene["lesions"]:
        layer = item[0]
        if layer == "atrophy":
            _, _, x, y, s, ang, _ = item
            _patch(img, t, x, y, s / 2, s / 2 * r.uniform(0.6, 1.0), ang, (0.82, 0.58, 0.40), 0.6,
                   choroid=_crop(t["tess"][0], r, size, n))
        elif layer == "ppa":
            _, _, x, y, s, tdir, _ = item
            rx = dd / 2 * scene["aspect"] + s * 0.6
            _patch(img, t, x + tdir * s * 0.45, y, rx, dd / 2 * 1.05, 0.0, (0.82, 0.58, 0.40), 0.6,
                   choroid=_crop(t["tess"][1], r, size, n))
        elif layer == "csc":
            _, _, x, y, s, _, _ = item
            rr = s / 2
            dist = np.sqrt((xx - x) ** 2 + (yy - y) ** 2) / rr
            inside = np.clip((1 - dist) * 6, 0, 1)
            rim = np.exp(-((dist - 1) / 0.06) ** 2)
            img[1] *= 1 - 0.10 * inside
            img[2] *= 1 - 0.06 * inside
            img[0] *= 1 + 0.04 * inside
            img += 0.05 * rim[None]
        elif layer == "erm":
            _, _, x, y, s, ang, _ = item
            sheen = Image.new("L", (size, size), 0)
            ds = ImageDraw.Draw(sheen)
            rr = s / 2
            # irregular, wavy striae of uneven length around (not from) a centre: wrinkled membrane
            for _ in range(int(r.integers(6, 12))):
                a0 = r.uniform(0, 2 * math.pi)
                l0, l1 = rr * r.uniform(0.15, 0.5), rr * r.uniform(0.6, 1.05)
                pts = []
                for k in range(6):
                    ll = l0 + (l1 - l0) * k / 5
                    aa = a0 + 0.18 * math.sin(k * 1.7 + a0 * 3)
                    pts.append((x + ll * math.cos(aa), y + ll * math.sin(aa)))
                ds.line(pts, fill=int(r.uniform(70, 150)), width=1)
            a = np.asarray(_soften(sheen, max(0.5, dd / 30)), np.float32) * (0.5 / 255)
            glaze = np.exp(((xx - x) ** 2 + (yy - y) ** 2) * (-1 / (2 * (rr * 0.8) ** 2))) * 0.12
            _blend(img, a + glaze, COLOURS["white"])

    # optic disc and cup
    _disc(img, t, scene)

    # vessels, drawn at twice the size and averaged down: widths taper smoothly below a pixel
    ss = 2
    art_l = Image.new("L", (size * ss, size * ss), 0)
    vein_l = Image.new("L", (size * ss, size * ss), 0)
    da, dv = ImageDraw.Draw(art_l), ImageDraw.Draw(vein_l)
    drawn = [(v, [(x * ss, y * ss) for x, y in v["pts"]]) for v in scene["vessels"]]  # at the drawing scale
    for v, pts in drawn:
        d = da if v["kind"] == "artery" else dv
        k = len(pts)
        for j in range(k - 1):
            w = ss * (v["w0"] + (v["w1"] - v["w0"]) * j / max(k - 2, 1))
            wi = max(1, int(round(w)))
            d.line(pts[j:j + 2], fill=255, width=wi)
            if wi > 2:  # round joints: no notch where two segments of a wide vessel meet
                (x, y), rr = pts[j + 1], w / 2
                d.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
    for item in scene["lesions"]:
        if item[0] == "vein" and item[1] == "beads":
            pts, w = item[2], item[3]
            for j, (x, y) in enumerate(pts):
                rr = ss * w * (1.1 if j % 2 else 0.6)
                dv.ellipse((ss * x - rr, ss * y - rr, ss * x + rr, ss * y + rr), fill=255)
        elif item[0] == "nick":
            _, _, x, y, s, ang, _ = item
            x, y, rr = ss * x, ss * y, ss * max(1.0, s / 2)
            dv.ellipse((x - rr, y - rr, x + rr, y + rr), fill=60)
            da.line((x - math.sin(ang) * rr * 3, y + math.cos(ang) * rr * 3,
                     x + math.sin(ang) * rr * 3, y - math.cos(ang) * rr * 3), fill=255,
                    width=max(1, int(round(ss * dd * 0.06))))
    # arteries carry a thin central light reflex where they are wide enough to show one
    for v, pts in drawn:
        if v["kind"] == "artery" and v["w0"] >= 3.5:
            da.line(pts[: max(2, len(pts) * 2 // 3)], fill=150, width=1)
    soft = max(0.35, dd / 70)
    for layer, name in ((vein_l, "vein"), (art_l, "artery")):
        alpha = np.asarray(_soften(layer.resize((size, size), Image.BOX), soft), np.float32)
        _blend(img, alpha * (VESSEL_OPACITY[name] / 255), COLOURS[name])

    # small lesions, one layer per colour
    layers: dict[str, tuple[Image.Image, ImageDraw.ImageDraw]] = {}
    for item in scene["lesions"]:
        if item[0] in ("red", "yellow", "drusen", "white", "dark"):
            if item[0] not in layers:
                im = Image.new("L", (size, size), 0)
                layers[item[0]] = (im, ImageDraw.Draw(im))
            _draw_lesion(layers[item[0]][1], item, r)
    for name in ("white", "drusen", "yellow", "dark", "red"):
        if name in layers:
            blur = {"white": dd / 18, "drusen": dd / 40, "yellow": dd / 80}.get(name, dd / 55)
            a = np.asarray(_soften(layers[name][0], max(0.3, blur)), np.float32) * (1 / 255)
            _blend(img, a, COLOURS[name])

    # foveal reflex: a tiny bright point in the dark fovea
    fx, fy = fovea
    if 0 < fx < size and 0 < fy < size:
        fr = max(0.6, dd * 0.035)
        y0, y1, x0, x1 = int(max(fy - 3 * fr, 0)), int(min(fy + 3 * fr + 1, size)), int(max(fx - 3 * fr, 0)), int(min(fx + 3 * fr + 1, size))
        spot = np.exp(-((xx[y0:y1, x0:x1] - fx) ** 2 + (yy[y0:y1, x0:x1] - fy) ** 2) / (2 * fr * fr))
        img[:, y0:y1, x0:x1] += 0.22 * spot[None]

    _defects(img, t, scene)

    # camera: exposure, white balance, FOV and vignetting, noise, softness, JPEG-ready uint8
    photo = scene.get("photo") or {}
    # without randomisation a photograph takes the centre of the randomised exposures: the benchmark
    # stand-ins sit in the middle of the corpus's brightness, not at its dark edge
    field = _camera_field(size, cam.name) * scene["exposure"] * photo.get("exposure", float(np.mean(PHOTOMETRIC["exposure"])))
    if photo:
        lx, ly = photo["light_xy"]
        rr = np.hypot(xx - (size - 1) / 2 - lx, yy - (size - 1) / 2 - ly) / (size / 2)
        field = field * (1 - photo["falloff"] * np.clip(rr, 0, 1.2) ** 2)
        if photo.get("retina_gain", 1.0) != 1.0:
            near_disc = np.exp(((xx - disc[0]) ** 2 + (yy - disc[1]) ** 2) * (-1 / (2 * (0.6 * dd) ** 2)))
            field = field * (photo["retina_gain"] + (1 - photo["retina_gain"]) * near_disc)
    wb = photo.get("white_balance", (1.0, 1.0, 1.0))
    for c in range(3):
        img[c] *= field * cam.gain[c] * wb[c]
    if photo.get("haze"):
        img -= photo["haze"] * (img - np.array(HAZE_COLOUR, np.float32)[:, None, None] * field[None])
    if photo.get("desaturate"):
        img -= photo["desaturate"] * (img - img.mean(axis=0, keepdims=True))
    noise = scene["noise"] + photo.get("noise", 0.0)
    if noise > 0:
        img += _crop(t["noise"], r, size, n) * (noise / 255)
    gamma = cam.gamma * photo.get("gamma", 1.0)
    arr = np.clip(img, 0, 1)
    out = Image.fromarray((arr.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), "RGB")
    resolution = min(cam.resolution, photo.get("resolution", 1.0))
    if resolution < 1:
        small = max(16, int(size * resolution))
        out = out.resize((small, small), Image.BILINEAR).resize((size, size), Image.BILINEAR)
    out = _soften(out, scene["blur"] + photo.get("blur", 0.0))
    if abs(gamma - 1) > 1e-3:
        lut = [int(255 * (i / 255) ** gamma + 0.5) for i in range(256)]
        out = out.point(lut * 3)
    _artefacts(out, cam, scene)
    return out


def _patch(img, t, x, y, rx, ry, ang, colour, strength, choroid=None) -> None:
    """A pale, sharp-edged atrophic patch (choroidal vessels show through when given)."""
    size = img.shape[1]
    pad = max(rx, ry) + 2
    y0, y1, x0, x1 = int(max(y - pad, 0)), int(min(y + pad + 1, size)), int(max(x - pad, 0)), int(min(x + pad + 1, size))
    if y1 <= y0 or x1 <= x0:
        return
    X = t["xx"][y0:y1, x0:x1] - x
    Y = t["yy"][y0:y1, x0:x1] - y
    ca, sa = math.cos(ang), math.sin(ang)
    u, v = X * ca + Y * sa, -X * sa + Y * ca
    e = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    a = np.clip((1 - e) * max(rx, 2) / 1.2, 0, 1) * strength
    if choroid is not None:
        a = a * (1 - 0.5 * choroid[y0:y1, x0:x1])
    sub = img[:, y0:y1, x0:x1]
    for c in range(3):
        sub[c] -= a * (sub[c] - colour[c])


def _disc(img, t, scene) -> None:
    size = img.shape[1]
    dd, (x, y) = scene["dd"], scene["disc"]
    rx, ry = dd / 2 * scene["aspect"], dd / 2
    pad = ry * 1.3 + 2
    y0, y1, x0, x1 = int(max(y - pad, 0)), int(min(y + pad + 1, size)), int(max(x - pad, 0)), int(min(x + pad + 1, size))
    if y1 <= y0 or x1 <= x0:
        return
    X = t["xx"][y0:y1, x0:x1] - x
    Y = t["yy"][y0:y1, x0:x1] - y
    e = np.sqrt((X / rx) ** 2 + (Y / ry) ** 2)
    # the margin shades into the retina over a tenth of the radius (a smoothstep), not a drawn edge
    edge = np.clip((1 - e) / 0.1, 0, 1)
    disc_a = edge * edge * (3 - 2 * edge)
    # cup: vertical CDR, centred slightly temporal; a notch enlarges it at one pole
    tdir = 1.0 if scene["fovea"][0] > x else -1.0
    cdr = scene["cdr"]
    cx = X - tdir * dd * 0.06
    ang = np.arctan2(Y, cx)
    cdr_eff = cdr + scene["notch"] * np.exp(-((ang - scene["notch_dir"] * math.pi / 2) / 0.5) ** 2)
    ec = np.sqrt((cx / (rx * 0.95)) ** 2 + (Y / ry) ** 2) / np.maximum(cdr_eff, 0.05)
    # the cup's visible edge (alpha half its peak) lies at the CDR, sloping over ~2 px like a real
    # excavation; its floor keeps some of the rim's colour and texture (the lamina shows through)
    cup_a = np.clip((1 - ec) * (ry * cdr / 2.0) + 0.5, 0, 1) * disc_a * 0.85
    pallor = scene["pallor"]
    # the neuroretinal rim is orange-yellow (pinker under some cameras' white balance), a little
    # brighter towards the cup and mottled by its capillaries; the cup pale yellow-white
    outer = np.array([0.94, 0.54 + 0.34 * pallor, 0.35 + 0.46 * pallor], np.float32)
    inner = np.array([0.98, 0.64 + 0.26 * pallor, 0.42 + 0.40 * pallor], np.float32)
    cup = np.array([0.98, 0.88 + 0.06 * pallor, 0.68 + 0.2 * pallor], np.float32)
    towards_cup = np.clip((1 - e) / max(1 - cdr, 0.1), 0, 1)
    shade = 1 + 0.06 * t["choroid"][1][y0:y1, x0:x1]
    margin = np.clip(1 - np.abs(e - 0.97) / 0.08, 0, 1) * 0.05   # the scleral lip's faint shadow
    sub = img[:, y0:y1, x0:x1]
    disc_a = disc_a * 0.92   # the retina's own colour shows faintly through the rim
    for c in range(3):
        rim = (outer[c] + (inner[c] - outer[c]) * towards_cup) * shade
        sub[c] -= disc_a * (sub[c] - rim)
        sub[c] -= cup_a * (sub[c] - cup[c])
        sub[c] *= 1 - margin


def _defects(img, t, scene) -> None:
    if not scene["defects"]:
        return
    size = img.shape[1]
    for region, (x, y), rad, kind in scene["defects"]:
        if region == "retina":
            w = np.ones((size, size), np.float32)
        else:
            d2 = (t["xx"] - x) ** 2 + (t["yy"] - y) ** 2
            w = np.exp(-d2 / (2 * (rad / 1.6) ** 2)).astype(np.float32)
        if kind in ("blur", "opacity"):
            pil = Image.fromarray((np.clip(img, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8))
            blurred = np.asarray(pil.filter(ImageFilter.GaussianBlur(scene["dd"] * 0.35)), np.float32).transpose(2, 0, 1) / 255
            img -= w[None] * (img - blurred)
            # out of focus through a hazy medium: the detail goes and the contrast with it
            haze = 0.55 if kind == "opacity" else 0.25
            img -= (haze * w)[None] * (img - np.array([0.55, 0.45, 0.35], np.float32)[:, None, None])
        elif kind in ("shadow", "underexposed"):
            img *= (1 - (0.85 if kind == "shadow" else 0.7) * w)[None]
        elif kind == "glare":
            img -= (0.9 * w)[None] * (img - 1.0)


def _artefacts(out: Image.Image, cam: CameraProfile, scene: dict) -> None:
    size = scene["size"]
    d = ImageDraw.Draw(out)
    x, y = scene["artefact_xy"]
    if cam.artefact == "dust":
        rr = max(1, size / 60)
        d.ellipse((x - rr, y - rr, x + rr, y + rr), fill=(25, 15, 10))
    elif cam.artefact == "ring":
        rr = size * 0.42
        d.ellipse((size / 2 - rr, size / 2 - rr, size / 2 + rr, size / 2 + rr), outline=(70, 45, 35), width=1)
    elif cam.artefact == "flare":
        rr = size * 0.05
        d.ellipse((x - rr, y - rr * 0.7, x + rr, y + rr * 0.7), outline=(200, 190, 170), width=max(1, size // 128))
    if scene["stamp"] and size >= 64:
        text = scene["stamp"] if cam.overlay == "timestamp" else f"{cam.name.split('_')[0].upper()} OD/OS"
        d.text((3, size - 12 if cam.overlay == "timestamp" else 2), text, fill=tuple(scene["stamp_colour"]))


def render_fundus(row: dict[str, Any], seed: int, index: int, size: int, camera: str | CameraProfile,
                  nonfundus_kinds: tuple[str, ...] = CORPUS_KINDS) -> tuple[Image.Image, dict[str, Any]]:
    """One RGB image and its measurements; a pure function of (row, seed, index, size, camera)."""
    if size < 32:
        raise DataError(f"render size {size} px is too small; expected >= 32")
    plan = plan_fundus(row, seed, index, size, camera, nonfundus_kinds)
    return rasterise(plan["scene"]), plan["measurements"]


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Fast, deterministic JPEG (libjpeg-turbo through simplejpeg, 4:2:0 as cameras store it)."""
    import simplejpeg
    return simplejpeg.encode_jpeg(np.ascontiguousarray(np.asarray(img)), quality=int(quality),
                                  colorspace="RGB", colorsubsampling="420")
