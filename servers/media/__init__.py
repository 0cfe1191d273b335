"""Backends shared by the media engines: AUDIO and VIDEO reuse the speech backends, VISION and VIDEO the vision ones."""
