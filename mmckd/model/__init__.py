"""MM-CKD modelling: from a feature file to a trained, routed predict bundle.

Modules: config (typed options), routing (subsets, which network answers), data (feature file ->
normalised padded batches), networks (teacher and students), mvsc (the contrastive loss), metrics
(MMSA metrics), missing (random-missing protocol), inference (batched prediction), evaluation
(conditions and missing-rate tables), checkpoint (crash-safe state), training (``fit``), bundle
(``load_bundle``), report (report.md and plots), synthetic (feature files with a known answer).
"""
