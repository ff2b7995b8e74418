# Importing the package first loads the environment's oneTBB before any test module can import OpenVINO
# (see neuralscan_cli._preload_onedal_tbb): otherwise the suite's import order decides whether sklearnex loads.
import neuralscan_cli  # noqa: F401
