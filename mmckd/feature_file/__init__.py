"""The mmckd feature file: one HDF5 file per extraction, and the only code that reads or writes it.

One concept per module:

- ``schema``: the format (name, version, the HDF5 layout), the in-memory ``Clip`` / ``Sequence``, errors
- ``storable``: what HDF5 can hold (valid UTF-8, no NUL, the file's widths) and the failed stand-in for the rest
- ``layout``: the datasets of the layout written and read (shared by the writer, the merge and the reader)
- ``writer``: ``FeatureFileWriter`` (crash-safe parts, lock, resume) and ``write_feature_file``
- ``merge``: the streaming merge of the final file and the parts
- ``reader``: ``FeatureFile`` and ``ModalityArrays``

The names below are the public API; import them from ``mmckd.feature_file``.
"""

from __future__ import annotations

from mmckd.feature_file.merge import merge_feature_files
from mmckd.feature_file.reader import FeatureFile, ModalityArrays
from mmckd.feature_file.schema import (
    FORMAT,
    FORMAT_VERSION,
    MODALITIES,
    SPLITS_VALID,
    Clip,
    ConfigMismatchError,
    FeatureFileError,
    Sequence,
    clip_to_dict,
    config_hash,
)
from mmckd.feature_file.storable import failed_stand_in, storable_text, unstorable_reason
from mmckd.feature_file.writer import FeatureFileWriter, StoredClip, write_feature_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODALITIES",
    "SPLITS_VALID",
    "Clip",
    "ConfigMismatchError",
    "FeatureFile",
    "FeatureFileError",
    "FeatureFileWriter",
    "ModalityArrays",
    "Sequence",
    "StoredClip",
    "clip_to_dict",
    "config_hash",
    "failed_stand_in",
    "merge_feature_files",
    "storable_text",
    "unstorable_reason",
    "write_feature_file",
]
