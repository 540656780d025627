"""Package data: the shipped default recording-requirement list (音像记录事项清单), ``default.yaml``."""
