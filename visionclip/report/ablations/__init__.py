"""Ablations of notebook 05: what each choice of the recipe is worth, each varied alone.

grid: the variants and their profiles; data: the rendered data they share; runs: training and
evaluating each variant, cached; tables: the tidy comparison tables and their computed sentences.
The figures are in report.figures, the image perturbations in eval.perturb.
"""
