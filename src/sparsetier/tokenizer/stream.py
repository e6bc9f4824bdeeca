"""Detokenize one token at a time while generating.

Decoding each token alone is wrong in two ways: a character can span several tokens (UTF-8
bytes in byte-level BPE, <0xNN> pieces in SentencePiece), and SentencePiece decoders strip the
leading space of the first token they see. So we decode a short window that starts a few
tokens back and emit what it adds over the same window without the new tokens. Text that ends
in an incomplete character (U+FFFD) is held back until the character completes, and a run of
SentencePiece <0xNN> pieces until the run ends (the decoder turns a whole run into U+FFFDs if any
later byte makes it invalid). The concatenation of everything `push` and `flush` return equals
`tokenizer.decode(all_ids)`.
"""

from __future__ import annotations

from .tokenizer import Tokenizer


class StreamDecoder:
    """`push(token_id)` returns the text that token completes (maybe ""); `flush()` the rest."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self._prefix = 0  # window start: context whose text was already emitted
        self._read = 0  # end of the emitted part of the window
        self._out: list[str] = []  # everything returned so far

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special=self.skip_special)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        if token_id in self.tokenizer.byte_token_ids:
            # A run of <0xNN> pieces is decoded as a whole (an invalid run becomes one U+FFFD
            # per byte, even after a valid prefix): wait for the run to end.
            return ""
        return self._emit()

    def flush(self) -> str:
        """The rest of the text (an incomplete character comes out as U+FFFD), ending the
        stream: the next push starts a new one."""
        # One full decode settles the end exactly, whatever the windows saw.
        full = self._decode(self.ids)
        emitted = "".join(self._out)
        self.ids, self._out, self._prefix, self._read = [], [], 0, 0
        return full[len(emitted) :] if full.startswith(emitted) else ""

    def _emit(self) -> str:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd") or not after.startswith(before):
            return ""  # nothing new yet, or a character still incomplete
        self._prefix, self._read = self._read, len(self.ids)
        self._out.append(after[len(before) :])
        return self._out[-1]
