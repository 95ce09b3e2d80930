"""Where a run's artifacts live, named once: `RunLayout(run_dir)` (ARCHITECTURE.md "Run directory"),
the default run directory, and the data roots (the real datasets when configured, else the
rendered stand-ins). No other module spells a run-directory name (tests/layering.py checks it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import PROFILE_DIR, Profile

STANDIN_BENCHMARKS = ("messidor2", "fives", "refuge")
VARIANTS = ("test", "dev", "seen")
RUNS = "runs"
REPOSITORY = PROFILE_DIR.parent
NOTEBOOK_DIR = REPOSITORY / "notebooks"  # the notebooks' sources, executed by report.pipeline
BOOK_DIR = REPOSITORY / "book"
DEVSET_WHEELS = REPOSITORY / ".cache" / "devset-wheels"  # fetched by `make devset-wheels`


def staged_notebooks(book_dir: Path = BOOK_DIR) -> Path:
    """Where the pipeline copies the executed notebooks for Jupyter Book to render (ignored by git)."""
    return Path(book_dir) / "notebooks"


def default_run_dir(profile_name: str) -> Path:
    """runs/<profile> under the current directory, absolute. `visionclip train`, `visionclip book`
    and `make book` (run in the repository) use it; the pipeline hands it to the notebooks, so a
    notebook reads what the command line wrote when both start in the same directory."""
    return (Path.cwd() / RUNS / profile_name).resolve()


@dataclass(frozen=True)
class TrainingPaths:
    """What one training task writes: its final model, its checkpoints and its two logs."""
    final: Path
    checkpoints: Path
    train_log: Path
    val_log: Path


@dataclass(frozen=True)
class RunLayout:
    """Every artifact of one run directory."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # ---- inputs
    @property
    def profile_json(self) -> Path:
        return self.root / "profile.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def corpus(self) -> Path:
        """The rendered stand-in corpus (paths.corpus_dir decides between it and a real release)."""
        return self.data / "corpus"

    @property
    def corpus_tables(self) -> Path:
        """The corpus table saved once for every later reader (data.table_cache)."""
        return self.data / "corpus_tables"

    @property
    def devset(self) -> Path:
        """The real-photograph dev set (data.devset): for development and the book, never for training."""
        return self.data / "devset"

    @property
    def camera_look(self) -> Path:
        """Notebook 01's sample of corpus images drawn again without the domain randomisation."""
        return self.data / "camera_look"

    def prepared(self, size: int) -> Path:
        """The corpus decoded and cropped once at `size` px (data.prepare): memory-mapped shards."""
        return self.data / "prepared" / f"{int(size)}px"

    def benchmarks(self, variant: str = "test") -> Path:
        """The stand-in renderings of one variant, one folder per dataset."""
        return self.data / "benchmarks" / variant

    # ---- training
    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def supervised(self) -> Path:
        return self.root / "supervised"

    def metrics(self, name: str) -> Path:
        return self.root / "metrics" / f"{name}.jsonl"

    def training(self, task: str) -> TrainingPaths:
        """The outputs of the training task named `task` ("clip" or "supervised")."""
        if task == "clip":
            return TrainingPaths(self.model, self.root / "checkpoints", self.metrics("train"), self.metrics("val"))
        return TrainingPaths(self.root / task, self.root / f"checkpoints_{task}", self.metrics(f"{task}_train"),
                             self.metrics(f"{task}_val"))

    @property
    def lock(self) -> Path:
        """The run-directory lock (runlock): which job works in this run directory now."""
        return self.root / "visionclip.lock"

    # ---- evaluation
    def eval(self, variant: str = "test") -> Path:
        """The reported (test) evaluation at eval/, the dev and seen renderings below it."""
        return self.root / "eval" if variant == "test" else self.root / "eval" / variant

    def eval_json(self, dataset: str, variant: str = "test") -> Path:
        return self.eval(variant) / f"{dataset}.json"

    def predictions(self, dataset: str, variant: str = "test") -> Path:
        return self.eval(variant) / f"predictions_{dataset}.csv"

    def table(self, variant: str = "test", suffix: str = ".csv") -> Path:
        return self.eval(variant) / f"table{suffix}"

    @property
    def fewshot_json(self) -> Path:
        return self.eval() / "fewshot.json"

    @property
    def retrieval_json(self) -> Path:
        return self.eval() / "retrieval.json"

    @property
    def separability_json(self) -> Path:
        return self.eval() / "separability.json"

    def embeddings(self, name: str) -> Path:
        return self.root / "embeddings" / f"{name}.npz"

    # ---- the book
    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    # ---- ablations: each variant is a run directory of its own under ablations/
    @property
    def ablations(self) -> Path:
        return self.root / "ablations"

    def ablation_variant(self, name: str) -> "RunLayout":
        return RunLayout(self.ablations / name)

    @property
    def ablation_data(self) -> Path:
        return self.ablations / "data"

    def ablation_corpus(self, size: int | None = None) -> Path:
        """The full ablation corpus, or its first `size` images (hard links) for the size curve."""
        return self.ablation_data / ("corpus" if size is None else f"corpus_{size}")

    def ablation_benchmarks(self, variant: str = "test") -> Path:
        return self.ablation_data / "benchmarks" / variant

    @property
    def ablation_nonfundus(self) -> Path:
        return self.ablation_data / "nonfundus"

    @property
    def result_json(self) -> Path:
        """An ablation variant's cached evaluation (written last)."""
        return self.root / "result.json"


def corpus_dir(profile: Profile, run_dir: str | Path) -> Path:
    """The real SynFundus-1M release when data.corpus_root is set, else the rendered stand-in."""
    return Path(profile.data.corpus_root) if profile.data.corpus_root else RunLayout(run_dir).corpus


def benchmark_dir(profile: Profile, run_dir: str | Path, dataset: str, variant: str = "test") -> Path | None:
    """The real dataset root when configured (for the test variant), else the rendered stand-in.

    Returns None for a dataset that has no stand-in and no configured root (the original MESSIDOR).
    """
    real = getattr(profile.data, f"{dataset}_root", "")
    if real and variant == "test":
        return Path(real)
    if dataset not in STANDIN_BENCHMARKS:
        return None
    return RunLayout(run_dir).benchmarks(variant) / dataset


def is_standin(profile: Profile, dataset: str) -> bool:
    return not getattr(profile.data, f"{dataset}_root", "")
