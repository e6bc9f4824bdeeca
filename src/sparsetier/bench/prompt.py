"""The benchmark prompt: real English prose that CPython ships (pydoc topics), no download needed.

It is tokenized once, by our tokenizer for the model, and every engine gets the same token ids.
"""

from __future__ import annotations

from ..errors import SparsetierError


def reference_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def prompt_ids(path: str, n_tokens: int) -> list[int]:
    """The first n_tokens token ids of the reference text, by the model file's own tokenizer."""
    from ..tokenizer import Tokenizer
    from ..weights.gguf import GGUFFile

    tokenizer = Tokenizer.from_gguf(GGUFFile(path))
    text = reference_text()
    chars = 8 * n_tokens  # English prose runs ~4 characters a token: tokenize only a prefix
    while True:
        ids = tokenizer.encode(text[:chars])
        if len(ids) > n_tokens or chars >= len(text):
            break
        chars *= 2
    if len(ids) < n_tokens:
        raise SparsetierError(f"the reference text is only {len(ids)} tokens long; asked for {n_tokens}")
    return list(ids[:n_tokens])
