"""Benchmarks: our engine against llama.cpp and transformers, and synthetic models to run them on.

Importing this package must stay cheap (no torch, no llama_cpp): the worker process that
measures an engine imports it before the engine's runtime, so its peak memory is the
engine's own.
"""
