"""Tokenizers and chat templates built from the model files themselves (GGUF metadata or a
Hugging Face folder), matching transformers' tokenizer for the same files."""

from .chat import ChatTemplateError, chat_template_for, encode_chat, render_chat
from .stream import StreamDecoder
from .tokenizer import Tokenizer

__all__ = [
    "ChatTemplateError",
    "StreamDecoder",
    "Tokenizer",
    "chat_template_for",
    "encode_chat",
    "render_chat",
]
