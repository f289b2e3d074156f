"""Demo/test child: build a tiny base model locally (no download).

``python -m daemon.worker.make_model REQUEST.json`` trains a byte-level BPE
tokenizer with the ``tokenizers`` library on the given corpus, gives it a
ChatML chat template, and saves a randomly initialised mlx-lm ``llama`` model
(config.json + model.safetensors) that ``mlx_lm.utils.load`` reads like any
Hugging Face checkpoint.

Request keys: ``out_dir``, ``corpus`` (list of str), ``vocab_size``,
``hidden_size``, ``num_hidden_layers``, ``intermediate_size``,
``num_attention_heads``, ``max_position_embeddings``, ``seed``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from daemon.worker.common import EXIT_OK, JsonLines, read_request, watch_parent, write_json

PAD, EOS, IM_START, IM_END = "<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer(out_dir: Path, corpus: list[str], vocab_size: int) -> int:
    """Train and save a byte-level BPE tokenizer; returns its vocabulary size.

    ``<pad>`` gets id 0 (the id mlx-lm pads batches with).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": IM_END,
                "pad_token": PAD,
                "unk_token": None,
                "model_max_length": 4096,
                "chat_template": CHATML_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": IM_END, "pad_token": PAD}, indent=2)
    )
    return int(tok.get_vocab_size())


def build_model(req: dict[str, Any]) -> dict[str, Any]:
    """Build tokenizer + random llama into ``req["out_dir"]``; returns a summary."""
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model
    from tokenizers import Tokenizer

    out_dir = Path(req["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(out_dir, list(req["corpus"]), int(req["vocab_size"]))
    eos_id = Tokenizer.from_file(str(out_dir / "tokenizer.json")).token_to_id(IM_END)
    config = {
        "model_type": "llama",
        "hidden_size": int(req["hidden_size"]),
        "num_hidden_layers": int(req["num_hidden_layers"]),
        "intermediate_size": int(req["intermediate_size"]),
        "num_attention_heads": int(req["num_attention_heads"]),
        "num_key_value_heads": int(req["num_attention_heads"]),
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": int(req["max_position_embeddings"]),
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    mx.random.seed(int(req["seed"]))
    args = llama.ModelArgs.from_dict(config)
    model = llama.Model(args)
    mx.eval(model.parameters())
    pretrain_loss = None
    if req.get("pretrain"):
        pretrain_loss = pretrain(model, out_dir, req)
    save_model(out_dir, model, donate_model=False)
    save_config(config, config_path=out_dir / "config.json")
    return {"ok": True, "vocab_size": vocab, "out_dir": str(out_dir), "pretrain_loss": pretrain_loss}


def pretrain(model: Any, tokenizer_dir: Path, req: dict[str, Any]) -> float:
    """Briefly train every weight on ``req["pretrain"]`` chat examples.

    Gives the random model the chat format and a copying skill, so that a
    LoRA adapter has something to build on (a random model cannot learn the
    demo task in a few hundred LoRA steps). Returns the last training loss.
    """
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train
    from mlx_lm.utils import load_tokenizer

    from daemon.worker.mlxutil import masked_loss

    np.random.seed(int(req["seed"]))
    tokenizer = load_tokenizer(tokenizer_dir)
    data = CacheDataset(ChatDataset(list(req["pretrain"]), tokenizer, mask_prompt=True))
    losses: list[float] = []
    iters = int(req.get("pretrain_iters", 300))
    progress = JsonLines(Path(req["progress_file"])) if req.get("progress_file") else None

    class Keep(TrainingCallback):
        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            losses.append(float(info["train_loss"]))
            if progress is not None:  # the demo shows the build's progress from these lines
                progress.write({"iteration": int(info["iteration"]), "total": iters, "train_loss": losses[-1]})

    schedule = optim.cosine_decay(float(req.get("pretrain_lr", 1e-3)), iters, 1e-4)
    model.unfreeze()
    train(
        model=model,
        optimizer=optim.Adam(learning_rate=schedule),
        train_dataset=data,
        args=TrainingArgs(batch_size=16, iters=iters, steps_per_report=25, steps_per_save=10**9,
                          adapter_file=str(tokenizer_dir / "pretrain-scratch.safetensors"), max_seq_length=256),
        loss=masked_loss,
        iterate_batches=mixed_batches,
        training_callback=Keep(),
    )
    if progress is not None:
        progress.close()
    (tokenizer_dir / "pretrain-scratch.safetensors").unlink(missing_ok=True)
    mx.eval(model.parameters())
    return losses[-1] if losses else float("nan")


def mixed_batches(
    dataset: Any,
    batch_size: int,
    max_seq_length: int,
    loop: bool = False,
    seed: int | None = None,
    comm_group: Any = None,
) -> Any:
    """Batches of randomly drawn examples (mlx-lm's ``iterate_batches`` signature).

    mlx-lm batches examples of similar length together, which for the demo's
    mix of task formats means one format per batch; full-weight pretraining
    then swings from format to format instead of learning to tell them apart.
    Yields ``(tokens (B, T) int32 zero-padded, (B, 2) [prompt offset, length])``.
    """
    import mlx.core as mx
    import numpy as np

    # np.random is seeded by pretrain(); mlx-lm's train() passes no seed.
    rng = np.random.default_rng(seed) if seed is not None else np.random
    n = len(dataset)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            rows = [dataset[int(j)] for j in order[start : start + batch_size]]
            lengths = [min(len(tokens), max_seq_length) for tokens, _ in rows]
            arr = np.zeros((batch_size, max(lengths)), np.int32)
            for k, (tokens, _) in enumerate(rows):
                arr[k, : lengths[k]] = tokens[: lengths[k]]
            yield mx.array(arr), mx.array([[offset, length] for (_, offset), length in zip(rows, lengths, strict=True)])
        if not loop:
            return


def main(argv: list[str]) -> int:
    watch_parent()
    req = read_request(argv)
    write_json(Path(req["result_file"]), build_model(req))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
