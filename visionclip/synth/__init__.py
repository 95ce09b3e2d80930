"""The Med-AIGC stand-in: labels, renderer, captions, camera profiles and writers of the layouts."""
from .captions import caption
from .labels import sample_labels
from .renderer import render_fundus
from .sheet import contact_sheet
from .writers import render_benchmarks, render_corpus, render_nonfundus

__all__ = ["caption", "contact_sheet", "render_benchmarks", "render_corpus", "render_fundus",
           "render_nonfundus", "sample_labels"]
