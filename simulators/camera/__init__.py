"""Simulated cameras (issue #11): an ONVIF device (``onvif.py``: device, media and event
services over SOAP 1.2, WS-UsernameToken digest, scriptable events, clock skew, reboot) and
synthetic scenes served as MJPEG (``scenes``, ``mjpeg``; these need OpenCV and are imported
only where used).

Written from the ONVIF specifications and WSDLs and from real camera answers, never from the
agent's drivers: nothing here imports ``edge_agent`` or ``drivers``.
"""

from .onvif import OnvifCamera

__all__ = ["OnvifCamera"]
