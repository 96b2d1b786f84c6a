"""Interoperability with the feature formats researchers already have.

* ``mmckd.interop.mmsa``: MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl`` in (``import_mmsa``) and out
  (``export_mmsa``);
* ``mmckd.interop.csd``: CMU-MultimodalSDK computational sequences (``.csd``) in (``import_csd``);
* ``mmckd.interop.safe_pickle``: the allow-list unpickler every pickle is read with;
* ``mmckd.interop.folds``: train/valid/test fold sources for ``.csd`` imports;
* ``mmckd.interop.synthetic``: synthetic MMSA pickles and ``.csd`` files with the real layouts (tests, demos).

Everything reads and writes mmckd feature files through ``mmckd.feature_file`` only.
"""
