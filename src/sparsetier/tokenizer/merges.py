"""Recover BPE merges from a vocabulary that stores none (SentencePiece-style GGUF files).

A merge (left, right) exists for every way of cutting a token into two pieces that are both
tokens. Merges are ranked by the score of the token they make (higher first), then by longer
left piece, then longer right piece, then vocabulary order -- the order transformers'
`generate_merges` produces, which is our reference.

Doing this with Python slicing and dict lookups costs ~1.5 s on Gemma's 262k tokens, so it is
done in numpy: every substring gets a 64-bit polynomial hash computed from prefix sums
(hash(s[i:j]) = (S[j] - S[i]) * B^-i mod 2^64), and pieces are looked up in a bucketed table
of the token hashes. A piece must also match its token's length; two different strings of
one length with one hash is a ~1e-19 event per lookup, so the result is exact in practice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BASE = 0x9E3779B97F4A7C15  # odd, so it has an inverse mod 2^64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_MIX = 0xBF58476D1CE4E5B9


class _HashTable:
    """Token hash -> token id (the last id where a hash repeats), vectorized over queries.

    Buckets keyed by the top bits of the (scrambled) hash, each a run of one array in id
    order. About one token per two buckets, so most lookups end after one comparison.
    """

    def __init__(self, hashes: np.ndarray):
        bits = int(hashes.shape[0]).bit_length() + 1
        self.shift = np.uint64(64 - bits)
        buckets = self._bucket(hashes)
        self.order = np.argsort(buckets, kind="stable")
        self.hashes = hashes[self.order]
        edges = np.searchsorted(buckets[self.order], np.arange((1 << bits) + 1, dtype=np.uint64))
        self.begin, self.end = edges[:-1], edges[1:]

    def _bucket(self, h: np.ndarray) -> np.ndarray:
        # Short strings hash to small numbers: scramble before taking the top bits.
        with np.errstate(over="ignore"):
            return (h * np.uint64(_MIX)) >> self.shift

    def find(self, queries: np.ndarray, first: bool = False) -> np.ndarray:
        found = np.full(queries.shape[0], -1, dtype=np.int64)
        bucket = self._bucket(queries).astype(np.int64)
        pos, end = self.begin[bucket], self.end[bucket]
        active = np.flatnonzero(pos < end)
        pos, end, queries = pos[active], end[active], queries[active]
        while active.shape[0]:
            hit = self.hashes[pos] == queries
            found[active[hit]] = self.order[pos[hit]]  # a later copy overwrites: the last wins
            pos = pos + 1
            more = pos < end
            if first:
                more &= ~hit
            active, pos, end, queries = active[more], pos[more], end[more], queries[more]
        return found


def derive_merges(tokens: Sequence[str], scores: Sequence[float] | np.ndarray) -> list[tuple[str, str]]:
    """Merges implied by `tokens`, best first; `scores[i]` ranks the merges that make token i.

    Where a token string repeats, the last copy's id and score count (as in a dict built from the
    list), and its first position sets its place among equal keys.
    """
    n_tok = len(tokens)
    if n_tok == 0:
        return []
    scores = np.asarray(scores, dtype=np.float64)
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=n_tok)
    chars = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ends = np.cumsum(lens)
    starts = ends - lens

    with np.errstate(over="ignore"):  # uint64 arithmetic wraps: that is the modulus
        total = chars.shape[0]
        powers = np.full(total + 1, _BASE, dtype=np.uint64)
        powers[0] = 1
        powers = np.cumprod(powers, dtype=np.uint64)
        inv_powers = np.full(total + 1, _BASE_INV, dtype=np.uint64)
        inv_powers[0] = 1
        inv_powers = np.cumprod(inv_powers, dtype=np.uint64)
        prefix = np.zeros(total + 1, dtype=np.uint64)
        np.cumsum((chars.astype(np.uint64) + np.uint64(1)) * powers[:total], out=prefix[1:])

        token_hash = (prefix[ends] - prefix[starts]) * inv_powers[starts]
        table = _HashTable(token_hash)
        canonical = table.find(token_hash)  # a repeated string resolves to its last copy
        ids = np.arange(n_tok)
        unique = bool(np.all(canonical == ids))
        distinct = ids == ids if unique else table.find(token_hash, first=True) == ids  # each string once

        # Every cut of every token, in token order, longest left piece first.
        n_cuts = np.where(distinct, np.maximum(lens - 1, 0), 0)
        owner = np.repeat(np.arange(n_tok), n_cuts)
        step = np.arange(owner.shape[0]) - np.repeat(np.cumsum(n_cuts) - n_cuts, n_cuts)
        left_len = np.repeat(lens - 1, n_cuts) - step
        cut = starts[owner] + left_len
        left = table.find((prefix[cut] - prefix[starts[owner]]) * inv_powers[starts[owner]])
        right = table.find((prefix[ends[owner]] - prefix[cut]) * inv_powers[cut])

    right_len = lens[owner] - left_len
    ok = (left >= 0) & (right >= 0)
    ok &= (lens[np.maximum(left, 0)] == left_len) & (lens[np.maximum(right, 0)] == right_len)
    owner, left, right, left_len, right_len = owner[ok], left[ok], right[ok], left_len[ok], right_len[ok]

    score = scores[canonical[owner]]
    if not (unique and np.all(np.diff(scores) < 0)):
        # Scores that do not already follow token order (e.g. Llama's): sort by the keys above.
        rank = np.lexsort((owner, -right_len, -left_len, -score))
        left, right = left[rank], right[rank]
    return [(tokens[a], tokens[b]) for a, b in zip(left.tolist(), right.tolist(), strict=True)]
