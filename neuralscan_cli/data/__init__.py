"""Dataset sources, the preprocess cache, near-duplicate grouping and leakage-safe splits."""
from .build import BuildError, BuildReport, build_cache, process_file
from .cache import CacheError, DatasetCache
from .sources import SourceError, SourceItem, discover, manifest_scan_paths
from .splits import SplitConfig

__all__ = ["BuildError", "BuildReport", "build_cache", "process_file", "CacheError", "DatasetCache",
           "SourceError", "SourceItem", "discover", "manifest_scan_paths", "SplitConfig"]
