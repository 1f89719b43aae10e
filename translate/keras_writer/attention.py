"""Keras code for attention ops written by the PyTorch reader."""

from __future__ import annotations
