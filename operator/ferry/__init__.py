"""Ferry: run GPU model endpoints from Kubernetes on local nodes, Modal, Replicate or RunPod."""
