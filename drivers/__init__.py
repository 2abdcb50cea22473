"""In-tree device drivers, one protocol family per sub-package (``drivers/<kind>/``)."""
