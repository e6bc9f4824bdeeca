"""sparsetier: LLM inference for machines smaller than the models they run."""

__version__ = "0.1.0"
