"""Evaluation of saved models: embedding, zero-shot scoring, metrics, the reference rows (chance and
the supervised ceiling), the paper's table, retrieval, few-shot probes, maps, perturbations and
prediction on anyone's photographs. Nothing here depends on training.
"""
