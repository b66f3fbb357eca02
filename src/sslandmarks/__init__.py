"""sslandmarks: semi-supervised landmark localisation (Honari et al., CVPR 2018).

Coordinates everywhere are ``(x, y)`` in pixels of the network input, with pixel ``(i, j)``
(column ``i``, row ``j``) centred at ``(i, j)``; see :mod:`sslandmarks.coords`.
"""

__version__ = "0.1.0"
