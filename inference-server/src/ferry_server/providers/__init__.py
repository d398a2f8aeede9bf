"""Thin platform entrypoints (Modal, RunPod; Replicate's predictor lives in replicate/)."""
