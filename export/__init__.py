"""Export pipeline: Hugging Face Phi-3.5 snapshots to onnxruntime-genai model packages.

Modules: fixtures (random checkpoints with real layouts), snapshot (checking and staging a
snapshot without running its code), text (Phi-3.5-mini through the model builder), verify
(package checks and PyTorch parity), cli (`edge-agent-export`).
"""
