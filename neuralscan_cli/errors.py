"""The base of every error that means 'the user's input is wrong', shown as one line, never a traceback."""


class NeuralScanError(Exception):
    """An expected failure with a one-line message for the user."""
