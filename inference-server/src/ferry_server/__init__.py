"""Ferry's inference server: one model server for local pods, Modal, RunPod and Replicate."""

__version__ = "0.1.0"
