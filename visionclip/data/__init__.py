"""Data: readers of the corpus and benchmark layouts, splits, preprocessing, torch Datasets, manifests.

Import the submodules directly (visionclip.data.readers, .datasets, ...): datasets needs torch,
the readers and manifests do not.
"""
