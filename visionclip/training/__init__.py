"""Pieces of the trainer (visionclip/train.py), one job per module.

schedule: warm-up + cosine learning rate; optim: AdamW parameter groups; precision: autocast
choice; checkpoint: atomic, pickle-free resumable state; sampler: seeded, resumable, sharded
batches; metrics: JSONL logs that are truncated on resume; distributed: torchrun/DDP helpers.
"""
