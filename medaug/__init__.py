"""medaug: more labelled CT scans for people who train segmentation models.

The top-level package stays light so that ``import medaug`` and ``medaug --help``
are instant; the stages live in their own modules (``medaug.io``, ``medaug.data``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
