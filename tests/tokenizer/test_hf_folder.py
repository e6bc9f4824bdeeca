"""Hugging Face folders in the older layouts (the real-model modules test folders saved by
transformers): template and special tokens in tokenizer_config.json or special_tokens_map.json,
extra end ids in generation_config.json."""

from __future__ import annotations

import json

from sparsetier.tokenizer import Tokenizer, render_chat

from .synth import spm_metadata


def _folder(tmp_path, tokenizer_config: dict, **files: dict) -> str:
    Tokenizer.from_gguf(spm_metadata()).backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    return str(tmp_path)


def test_config_layout(tmp_path):
    config = {
        "add_bos_token": True,
        "bos_token": {"content": "<s>", "special": True},
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
        ],
    }
    folder = _folder(
        tmp_path, config, generation_config={"eos_token_id": [2, 260]}, config={"model_type": "llama"}
    )
    tok = Tokenizer.from_hf_folder(folder)
    assert tok.add_bos and tok.bos_id == 1
    assert tok.eos_ids == {2, 260}
    assert tok.architecture == "llama"
    assert render_chat(tok, [{"role": "user", "content": "hi"}]) == "<s>hi</s>"
    assert tok.encode("hello")[0] == 1


def test_special_tokens_map_and_post_processor(tmp_path):
    """No add_bos_token and no tokens in the config: special_tokens_map.json names them, and
    tokenizer.json's post-processor (here: none) says whether BOS is added."""
    folder = _folder(tmp_path, {}, special_tokens_map={"bos_token": "<s>", "eos_token": "</s>"})
    tok = Tokenizer.from_hf_folder(folder)
    assert tok.bos_id == 1 and tok.eos_ids == {2}
    assert tok.add_bos is False  # the saved backend has no post-processor
    assert tok.chat_template is None
    assert len(tok.byte_token_ids) == 256
