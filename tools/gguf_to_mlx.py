"""Convert a llama-architecture GGUF file (llama.cpp) into an mlx-lm model directory.

    python tools/gguf_to_mlx.py MODEL.gguf OUT_DIR [--dtype float32|float16|bfloat16]

Needs the ``gguf`` library (``pip install gguf``), ``tokenizers`` and mlx; no
torch and no download. What it undoes of llama.cpp's conversion
(``convert_hf_to_gguf.py``):

* **quantization**: every tensor is dequantized with ``gguf.quants.dequantize``
  (Q4_0/Q4_1/Q8_0/K-quants...) and stored as ``--dtype``;
* **names**: ``blk.N.attn_q`` -> ``model.layers.N.self_attn.q_proj`` etc.;
* **rotary row permutation**: llama.cpp reorders the rows of ``q_proj`` and
  ``k_proj`` from Hugging Face's rotate-half layout to interleaved pairs
  (``LlamaModel.permute``); :func:`unpermute` is its inverse;
* **config**: ``config.json`` from the ``llama.*`` metadata; the output
  projection is tied to the embeddings when the file has no ``output.weight``;
* **tokenizer**: a byte-level BPE (``tokenizer.ggml.model == "gpt2"``) rebuilt
  with the ``tokenizers`` library from ``tokenizer.ggml.tokens``/``merges``,
  control tokens as special tokens, the chat template from
  ``tokenizer.chat_template``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
CONTROL_TOKEN_TYPE = 3
"""``gguf.TokenType.CONTROL``: special tokens such as ``<|im_start|>``."""


def unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's rotary row permutation of a q/k projection.

    ``convert_hf_to_gguf.LlamaModel.permute`` does
    ``w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(w.shape)``
    (with ``n_head`` = the KV head count for ``k_proj``); this swaps the axes back.

    Args:
        weights: ``(rows, cols)`` as stored in the GGUF file.
        n_head: attention heads for ``q_proj``, KV heads for ``k_proj``.
    """
    rows = weights.shape[0]
    return weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_config(reader: Any) -> dict[str, Any]:
    """An mlx-lm/Hugging Face ``config.json`` for a llama GGUF file.

    Raises:
        ValueError: the architecture is not llama.
    """
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, this one is {arch!r}")
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    names = {t.name for t in reader.tensors}
    tokens = _field(reader, "tokenizer.ggml.tokens")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, "llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, "llama.context_length", 2048)),
        "vocab_size": int(_field(reader, "llama.vocab_size", len(tokens) if tokens else 0)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }


def read_weights(reader: Any, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32 under its Hugging Face name, q/k rows un-permuted."""
    from gguf.quants import dequantize

    out: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        array = array.reshape(shape)
        name = tensor.name
        if name in _GLOBAL_NAMES:
            out[_GLOBAL_NAMES[name]] = array
            continue
        _, layer, kind, suffix = name.split(".", 3)
        if kind == "attn_q":
            array = unpermute(array, config["num_attention_heads"])
        elif kind == "attn_k":
            array = unpermute(array, config["num_key_value_heads"])
        out[f"model.layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}"] = array
    return out


def write_tokenizer(reader: Any, out_dir: Path) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` (with the chat template) from the GGUF metadata.

    Raises:
        ValueError: not a byte-level BPE tokenizer (``tokenizer.ggml.model`` other than ``gpt2``).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"only byte-level BPE (gpt2) tokenizers are supported, this one is {kind!r}")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's "smollm"/"gpt2" pre-tokenizers: single digits, then GPT-2's byte-level regex.
    digits = [pre_tokenizers.Digits(individual_digits=True)] if _field(reader, "tokenizer.ggml.pre") == "smollm" else []
    tok.pre_tokenizer = pre_tokenizers.Sequence([*digits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=True)
                            if ty == CONTROL_TOKEN_TYPE])

    def token(key: str) -> str | None:
        idx = _field(reader, key)
        return tokens[int(idx)] if idx is not None else None

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        unk_token=token("tokenizer.ggml.unknown_token_id"),
        pad_token=token("tokenizer.ggml.padding_token_id"),
    )
    template = _field(reader, "tokenizer.chat_template")
    if template:
        fast.chat_template = template
    fast.save_pretrained(str(out_dir))


def convert(gguf_path: Path, out_dir: Path, dtype: str = "float32") -> dict[str, Any]:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files into ``out_dir``.

    Returns:
        The config written.
    """
    import mlx.core as mx
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    config = read_config(reader)
    weights = read_weights(reader, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = getattr(mx, dtype)
    mx.save_safetensors(
        str(out_dir / "model.safetensors"),
        {k: mx.array(v).astype(target) for k, v in weights.items()},
        metadata={"format": "mlx"},
    )
    (out_dir / "config.json").write_text(json.dumps({**config, "torch_dtype": dtype}, indent=2))
    write_tokenizer(reader, out_dir)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    args = parser.parse_args(argv)
    config = convert(args.gguf, args.out_dir, args.dtype)
    print(f"wrote {args.out_dir}: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
          f"vocab {config['vocab_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
