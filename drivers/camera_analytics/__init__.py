"""On-device video analytics for cameras (``kind: camera_analytics``, issue #11).

``config`` (the ``analytics:`` block), ``engine`` (the analysis, OpenCV), ``worker`` (the
worker process: stream reading), ``runner`` (the agent's side: process, pipe, restarts),
``driver`` (the kind). Only ``engine`` and the worker import OpenCV.
"""
