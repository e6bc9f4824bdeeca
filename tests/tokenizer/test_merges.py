"""Merges rebuilt from a vocabulary (SentencePiece-style GGUF files store none) are exactly
transformers' `generate_merges`: same pairs, same order, repeated tokens and tied scores
included."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sparsetier.tokenizer.merges import derive_merges


def reference_merges(tokens, scores):
    from transformers.tokenization_utils_base import generate_merges

    vocab = {t: i for i, t in enumerate(tokens)}
    return generate_merges(vocab, dict(zip(tokens, scores, strict=True)))


@pytest.mark.parametrize("seed", range(40))
def test_random_vocabularies(seed):
    rng = random.Random(seed)
    alphabet = "ab▁é😀 \n" if seed % 2 else "abcdefgh"
    tokens = list(alphabet) + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(5, 120))
    ]  # repeats happen
    if seed % 3 == 0:
        scores = [-float(i) for i in range(len(tokens))]  # Gemma: file order
    else:
        scores = [rng.choice([0.0, -1.0, -2.5, rng.random()]) for _ in tokens]  # ties
    assert derive_merges(tokens, scores) == reference_merges(tokens, scores)


def test_edge_cases():
    assert derive_merges([], []) == []
    assert derive_merges(["a", "b"], [0.0, 0.0]) == []
    assert derive_merges(["a", "b", "ab", "ab"], [0.0, 0.0, 1.0, 2.0]) == [("a", "b")]
    tokens = ["a", "aa", "aaa", "aaaa"]
    assert derive_merges(tokens, np.array([0.0, -1.0, -2.0, -3.0])) == reference_merges(
        tokens, [0, -1, -2, -3]
    )
