"""Estimator specs: JSON in, allowlisted scikit-learn objects out."""
