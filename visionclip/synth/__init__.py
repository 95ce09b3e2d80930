"""The Med-AIGC stand-in: labels, renderer, camera profiles, non-fundus frames and writers of the layouts.

Import the submodules directly (visionclip.synth.writers, .renderer, ...); the captioner that
turns labels into text is data.captions, since real releases need it too.
"""
