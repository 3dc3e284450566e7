"""Thin wrappers over the libraries that do the heavy work (onnxruntime-genai, ...)."""
