"""The Keras layer families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import activations, applications, attention, conv, core, merge, normalization, pooling, preprocessing, recurrent, regularization, reshaping  # noqa: F401
