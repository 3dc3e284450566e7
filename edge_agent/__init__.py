"""edge-agent: an offline assistant daemon (chat, camera OCR and image questions, speech)
over ZeroMQ, serving onnxruntime-genai model packages."""

__version__ = "0.1.0"
