"""The book's environment: exact pins in requirements/lock.txt, mirrored by environment.yml,
inside the compatible ranges that pyproject.toml states."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
CN_CLIP = ROOT / "requirements" / "cn_clip.txt"
ENV = ROOT / "environment.yml"
PYPROJECT = ROOT / "pyproject.toml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def parse_pins(lines, where: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("-e ") or line.startswith("-"):
            continue
        m = PIN.match(line)
        assert m, f"{where} line {n}: expected an exact pin name==version, got {line!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{where} line {n}: {name} pinned twice"
        pins[name] = Version(m.group(2))
    return pins


def lock_pins() -> dict[str, Version]:
    return parse_pins(LOCK.read_text(encoding="utf-8").splitlines(), str(LOCK.name))


def env_pip_section() -> list[str]:
    env = yaml.safe_load(ENV.read_text(encoding="utf-8"))
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml: expected one pip section"
    return [str(x) for x in pip[0]]


def project_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_lock_pins_exact_versions_and_the_platform_torch():
    pins = lock_pins()
    assert len(pins) > 50
    assert pins["torch"] == Version("2.14.1")
    assert pins["torchvision"] == Version("0.29.1")
    assert "visionclip" not in pins, "the editable package itself must not be pinned"
    dropped = [n for n in pins if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    assert not dropped, f"torch's platform wheels are fixed by the torch pin, not listed: {dropped}"


@pytest.mark.parametrize("req", project_requirements(), ids=lambda r: r.name)
def test_every_pyproject_requirement_is_pinned_inside_its_range(req):
    pins = lock_pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req} (pyproject.toml) has no pin in {LOCK.name}"
    assert req.specifier.contains(pins[name], prereleases=True), \
        f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject.toml's range {req.specifier}"


def test_environment_yml_mirrors_the_lock_exactly():
    env = yaml.safe_load(ENV.read_text(encoding="utf-8"))
    assert "python=3.11" in env["dependencies"], "environment.yml: expected python=3.11"
    section = env_pip_section()
    env_pins = parse_pins(section, "environment.yml")
    lock = lock_pins()
    assert env_pins == lock, (
        f"environment.yml and {LOCK.name} disagree: only in the lock {sorted(set(lock) - set(env_pins))}, "
        f"only in environment.yml {sorted(set(env_pins) - set(lock))}, different versions "
        f"{sorted(n for n in set(lock) & set(env_pins) if lock[n] != env_pins[n])}")
    assert any(x.startswith("-e .[") for x in section), "environment.yml: expected the package, editable"


def test_pyproject_ranges_admit_other_torch_builds():
    """Researchers bring their own CUDA torch: the range must not be an exact pin."""
    torch = next(r for r in project_requirements() if r.name == "torch")
    assert not any(s.operator == "==" for s in torch.specifier)
    assert torch.specifier.contains("2.5.1") and torch.specifier.contains("2.14.1")


def test_cn_clip_is_hash_pinned_installed_without_dependencies_and_gives_the_vocabulary():
    """The paper profile's vocabulary on a fresh clone: make env installs cn-clip from its own hash-pinned
    file without dependencies (they are not used; lmdb==1.3.0 has no wheel for Python 3.11), and the
    installed vocab.txt is the one data_manifests/cn_clip_vocab.yaml records."""
    from importlib.metadata import version

    from visionclip.data.manifests import load_manifest
    from visionclip.io import sha256_file
    from visionclip.text import find_cn_clip_vocab

    pins = re.findall(r"^cn-clip==(\S+) \\\n\s+--hash=sha256:[0-9a-f]{64}$", CN_CLIP.read_text(), re.M)
    assert pins == ["1.6.0"] and version("cn-clip") == "1.6.0"
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install -q --no-deps --require-hashes -r $(CN_CLIP)" in make
    assert "$(VENV)/.installed: pyproject.toml $(LOCK) $(CN_CLIP)" in make  # a new pin reinstalls
    assert "cn-clip" not in lock_pins() and "cn-clip" not in parse_pins(env_pip_section(), "environment.yml")
    vocab = find_cn_clip_vocab()
    assert vocab is not None and sha256_file(vocab) in load_manifest("cn_clip_vocab")["provenance"]
