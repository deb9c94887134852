"""ger: offline-first record/replay for zero-shot emotion recognition with vision LLMs."""

__version__ = "0.1.0"
