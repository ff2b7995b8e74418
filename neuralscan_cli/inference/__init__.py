"""Model bundles and the runners that score images with them."""
from .bundle import (BUNDLED, BundleError, ModelBundle, bundled_path, load_bundle, new_bundle_meta,
                     resolve_bundle_path)
from .runners import (KerasRunner, OpenVINORunner, Runner, engine_of_file, load_cache_for_bundle,
                      load_data_for_bundle, load_images_for_bundle, load_keras_model, make_runner, preprocessing_differences)

__all__ = ["BUNDLED", "BundleError", "ModelBundle", "bundled_path", "load_bundle", "new_bundle_meta",
           "resolve_bundle_path", "KerasRunner", "OpenVINORunner", "Runner", "engine_of_file",
           "load_cache_for_bundle", "load_data_for_bundle", "load_images_for_bundle", "load_keras_model", "make_runner",
           "preprocessing_differences"]
