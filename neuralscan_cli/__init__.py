"""NeuralScan: find, classify and outline brain tumours in MRI, fast on CPUs."""
__version__ = "0.1.0"
