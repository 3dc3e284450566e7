"""Hardware and media: cameras (devices/camera.py) and audio output (devices/audio.py)."""
