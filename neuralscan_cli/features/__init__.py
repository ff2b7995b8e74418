"""Radiomics-style handcrafted features, their analysis, and classical baselines on oneDAL.

    radiomics   FeatureConfig, extract_features (one slice), extract_matrix (a cache, parallel, cached on disk)
    engines     stock scikit-learn vs scikit-learn-intelex estimators in one process
    analysis    `neuralscan analyze`: PCA, k-means, separability, correlation, outliers
    baselines   `neuralscan baseline`: group-aware CV, timing per engine, saved models, predict_paths
"""
from .radiomics import FeatureConfig, FeatureError, extract_features, extract_matrix

__all__ = ["FeatureConfig", "FeatureError", "extract_features", "extract_matrix"]
