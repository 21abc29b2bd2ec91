"""Training: ``python -m ovsam_model.train --stage sam2clip|clip2sam|end2end ...``."""
