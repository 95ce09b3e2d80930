"""VisionCLIP book library: synthetic fundus corpus, CLIP model, training and zero-shot evaluation."""
__version__ = "0.1.0"
