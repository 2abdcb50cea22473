"""Simulated cameras: synthetic scenes served as MJPEG (``scenes``, ``mjpeg``)."""
