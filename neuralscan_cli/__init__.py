"""NeuralScan: find, classify and outline brain tumours in MRI, fast on CPUs."""
__version__ = "0.1.0"


def _preload_onedal_tbb() -> None:
    """Load the environment's oneTBB before OpenVINO can load its own older copy.

    scikit-learn-intelex's oneDAL needs symbols of the newer oneTBB that the `tbb` wheel puts in
    `<prefix>/lib`; OpenVINO ships an older libtbb.so.12 with the same name. Whichever is loaded first serves
    the whole process, so with OpenVINO first `import sklearnex` fails. The newer one serves both.
    """
    import ctypes
    import os
    import sys

    path = os.path.join(sys.prefix, "lib", "libtbb.so.12")
    if sys.platform.startswith("linux") and os.path.exists(path):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass


_preload_onedal_tbb()
