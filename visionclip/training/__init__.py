"""Pre-training, one job per module.

loop: the one training loop (CPU, GPU, torchrun); tasks: what it trains (CLIP, the supervised
ceiling); schedule: warm-up + cosine learning rate; optim: AdamW parameter groups; checkpoint:
atomic, pickle-free resumable state; sampler: seeded, resumable, sharded batches; logs: JSONL
metrics truncated on resume; guard: the non-finite step guard; distributed: torchrun/DDP helpers.
"""
