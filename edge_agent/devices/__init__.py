"""Hardware and media sources: cameras (and, later, audio output)."""
