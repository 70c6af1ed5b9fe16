"""Infuse fine-grained visual knowledge into a CLIP vision encoder without forgetting."""
