"""Base-model checks that read files only: config.json, weights headers, tokenizer, template.

Nothing here loads a tensor or imports mlx. Whether mlx-lm supports the model
is decided by reading the installed mlx-lm package's files (``models/<type>.py``
and the remapping tables in ``utils.py``) without importing it, because
importing ``mlx_lm`` imports mlx.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.errors import ModelFileError, TemplateError, reading
from daemon.preflight.report import CheckResult, Level, result
from daemon.resources import config_value, context_length, format_bytes

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_GLOB = "model*.safetensors"
"""mlx-lm's ``load_model`` loads every file matching this, and nothing else."""

SAFETENSORS_MAX_HEADER_BYTES = 100 * 1024 * 1024
"""The safetensors format's limit on the JSON header (bytes)."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model")
"""Any one of these (or ``*.tiktoken``, or ``vocab.json`` + ``merges.txt``) is a tokenizer."""

VLM_CONFIG_KEYS = ("vision_config", "audio_config", "vision_tower", "mm_projector_type", "image_token_index")
"""config.json keys that mark a vision/audio-language checkpoint."""



# ---------------------------------------------------------------- mlx-lm, read statically


@dataclass(frozen=True)
class MlxLmInfo:
    """What the installed mlx-lm supports, read from its files.

    Attributes:
        version: the installed distribution's version ('' when not installed).
        models_dir: ``mlx_lm/models`` (None when not installed).
        remapping: ``MODEL_REMAPPING`` (model_type -> module).
        architecture_remapping: ``MODEL_ARCHITECTURE_REMAPPING``
            ((model_type, architecture) -> module).
    """

    version: str
    models_dir: Path | None
    remapping: dict[str, str] = field(default_factory=dict)
    architecture_remapping: dict[tuple[str, str], str] = field(default_factory=dict)

    def module_for(self, config: dict[str, Any]) -> str:
        """The ``mlx_lm.models`` module name mlx-lm would import for ``config``
        (mirrors ``mlx_lm.utils._get_classes``)."""
        model_type = str(config.get("model_type"))
        architectures = config.get("architectures") or ()
        if isinstance(architectures, str):
            architectures = (architectures,)
        for arch in architectures:
            remapped = self.architecture_remapping.get((model_type, str(arch)))
            if remapped is not None:
                return remapped
        return self.remapping.get(model_type, model_type)

    def supports(self, module: str) -> bool:
        """True when ``mlx_lm/models/<module>.py`` exists."""
        return self.models_dir is not None and (self.models_dir / f"{module}.py").is_file()


@functools.lru_cache(maxsize=1)
def mlx_lm_info() -> MlxLmInfo:
    """Locate the installed mlx-lm without importing it and read its remapping tables."""
    try:
        version = importlib.metadata.version("mlx-lm")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    spec = importlib.util.find_spec("mlx_lm")  # locates only: the package is not executed
    if spec is None or not spec.submodule_search_locations:
        return MlxLmInfo(version, None)
    pkg = Path(next(iter(spec.submodule_search_locations)))
    tables: dict[str, Any] = {}
    try:
        tree = ast.parse((pkg / "utils.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING"):
                try:
                    tables[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return MlxLmInfo(
        version,
        pkg / "models",
        dict(tables.get("MODEL_REMAPPING", {})),
        dict(tables.get("MODEL_ARCHITECTURE_REMAPPING", {})),
    )


# ---------------------------------------------------------------- files


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """Parse ``config.json`` of a model directory.

    Raises:
        ModelFileError: the directory or file is missing, or the file is not a JSON object.
    """
    path = model_dir / CONFIG_FILE
    if not model_dir.is_dir():
        raise ModelFileError(f"model directory {model_dir} does not exist; fix paths.base_model")
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; is paths.base_model a Hugging Face/mlx model directory?")
    try:
        with reading(path):
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} cannot be read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelFileError(
            f"{path} line {exc.lineno} is not valid JSON ({exc.msg}); re-download the model"
        ) from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} must hold a JSON object")
    return data


@dataclass(frozen=True)
class SafetensorsHeader:
    """The header of a ``.safetensors`` file (format: 8-byte little-endian header
    length, JSON header, then the tensor bytes).

    Attributes:
        tensors: name -> ``{"dtype", "shape", "data_offsets"}``.
        header_bytes: length of the JSON header.
        data_bytes: tensor bytes the header describes (largest end offset).
        file_bytes: the file's size.
    """

    tensors: dict[str, dict[str, Any]]
    header_bytes: int
    data_bytes: int
    file_bytes: int

    @property
    def truncated(self) -> bool:
        """True when the file is shorter than its header says."""
        return self.file_bytes < 8 + self.header_bytes + self.data_bytes


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and validate a safetensors header without touching tensor data.

    Raises:
        ModelFileError: the file is unreadable or its header is malformed.
    """
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ModelFileError(f"{path.name} is {size} bytes: too short for a safetensors file")
            (n,) = struct.unpack("<Q", prefix)
            if n > SAFETENSORS_MAX_HEADER_BYTES or n > size - 8:
                raise ModelFileError(
                    f"{path.name} has a corrupt header (says {n} header bytes, file is {size} bytes); re-download it"
                )
            raw = fh.read(n)
    except OSError as exc:
        raise ModelFileError(f"{path.name} cannot be read: {exc}") from exc
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path.name} header is not valid JSON ({exc}); re-download it") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name} header is not a JSON object; re-download it")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ModelFileError(f"{path.name}: tensor {name!r} has invalid data_offsets; re-download it")
        end = max(end, offsets[1])
    return SafetensorsHeader(header, n, end, size)


@dataclass
class WeightsScan:
    """What :func:`scan_weights` found.

    Attributes:
        shards: the weight files mlx-lm would load.
        data_bytes: tensor bytes over all readable shards.
        dtypes: tensor bytes per dtype.
        problems: failures, one line each (file named, fix included).
        notes: warnings, one line each.
    """

    shards: list[Path] = field(default_factory=list)
    data_bytes: int = 0
    dtypes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def scan_weights(model_dir: Path) -> WeightsScan:
    """Check every weight shard exists and has a readable, complete header.

    With ``model.safetensors.index.json``, every shard it lists must exist,
    match mlx-lm's ``model*.safetensors`` pattern and hold the tensors the
    index assigns to it; files matching the pattern but not in the index are
    reported (mlx-lm loads them too). Without an index, the files matching
    the pattern are checked. Only headers are read (a few kB per shard).
    """
    scan = WeightsScan()
    index_path = model_dir / INDEX_FILE
    on_disk = sorted(model_dir.glob(WEIGHTS_GLOB))
    expected: dict[str, set[str]] = {}
    if index_path.is_file():
        try:
            with reading(index_path):
                index = json.loads(index_path.read_text(encoding="utf-8"))
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            scan.problems.append(f"{INDEX_FILE} is unreadable ({exc}); re-download the model")
            return scan
        for tensor, shard in weight_map.items():
            expected.setdefault(str(shard), set()).add(tensor)
        for shard in sorted(expected):
            path = model_dir / shard
            if not path.match(WEIGHTS_GLOB):
                scan.problems.append(
                    f"{INDEX_FILE} lists {shard}, which mlx-lm never loads (it loads {WEIGHTS_GLOB} only); "
                    "convert the model with mlx_lm.convert"
                )
            elif not path.is_file():
                scan.problems.append(
                    f"{shard} is missing ({len(expected[shard])} tensors listed in {INDEX_FILE}); "
                    "finish or repeat the download"
                )
            else:
                scan.shards.append(path)
        for path in on_disk:
            if path.name not in expected:
                scan.notes.append(
                    f"{path.name} is not in {INDEX_FILE} but mlx-lm loads every {WEIGHTS_GLOB}; "
                    "delete it if it is left over from another download"
                )
                scan.shards.append(path)
    else:
        scan.shards = on_disk
        if not on_disk:
            other = sorted(p.name for p in model_dir.glob("*") if p.suffix in (".bin", ".gguf", ".pt", ".pth"))
            hint = f" (found {', '.join(other[:3])}: convert with mlx_lm.convert)" if other else ""
            scan.problems.append(f"no {WEIGHTS_GLOB} in {model_dir}{hint}")
            return scan
    for path in scan.shards:
        try:
            with reading(path):
                header = read_safetensors_header(path)
        except ModelFileError as exc:
            scan.problems.append(str(exc))
            continue
        if header.truncated:
            have = header.file_bytes - 8 - header.header_bytes
            scan.problems.append(
                f"{path.name} is truncated: its header describes {format_bytes(header.data_bytes)} of tensors "
                f"but the file holds {format_bytes(max(have, 0))}; re-download it"
            )
            continue
        missing = expected.get(path.name, set()) - header.tensors.keys()
        if missing:
            first = sorted(missing)[0]
            scan.problems.append(
                f"{path.name} lacks {len(missing)} tensor(s) that {INDEX_FILE} assigns to it (e.g. {first}); "
                "re-download it"
            )
            continue
        scan.data_bytes += header.data_bytes
        for info in header.tensors.values():
            start, end = info["data_offsets"]
            scan.dtypes[str(info.get("dtype"))] += end - start
    return scan


def load_chat_template(model_dir: Path) -> tuple[str | None, str]:
    """The model's chat template and where it came from.

    Looks where transformers does: ``chat_template.jinja``, then
    ``chat_template.json`` (``{"chat_template": ...}``), then
    ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of
    ``{"name", "template"}`` from which ``default`` is taken).

    Returns:
        ``(template, source file name)``; ``(None, "")`` when there is none.

    Raises:
        ModelFileError: a template file exists but cannot be parsed.
    """
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), jinja.name
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            with reading(path):
                data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{name} is not valid JSON ({exc}); re-download the model") from exc
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template.strip():
            return template, name
    return None, ""


def quantization(config: dict[str, Any]) -> dict[str, Any] | None:
    """The model's quantization settings (``quantization`` or ``quantization_config``,
    top level or in ``text_config``), else None."""
    for key in ("quantization", "quantization_config"):
        value = config_value(config, key)
        if isinstance(value, dict) and value:
            return value
    return None


def is_vision_language(config: dict[str, Any]) -> bool:
    """True for vision/audio-language checkpoints (Gemma 3/4, Qwen-VL, Llava, Mistral 3, ...)."""
    if any(key in config for key in VLM_CONFIG_KEYS):
        return True
    model_type = str(config.get("model_type", ""))
    return isinstance(config.get("text_config"), dict) and not model_type.endswith("_text")


# ---------------------------------------------------------------- checks


def check_config_consistency(cfg: Config, model_config: dict[str, Any] | None) -> list[CheckResult]:
    """Config values that must agree with each other and with the model.

    LoRA layers <= the model's layers, ``max_seq_len_tokens`` <= its context,
    ``grad_accumulation`` >= 1, ``warmup_steps`` < ``iters``. Checks needing
    the model are skipped (with a warning) when its config.json is unreadable.
    """
    t = cfg.training
    problems: list[str] = []
    notes: list[str] = []
    facts: list[str] = []
    if t.grad_accumulation < 1:
        problems.append(f"training.grad_accumulation must be >= 1, got {t.grad_accumulation}")
    if t.warmup_steps >= t.iters:
        problems.append(
            f"training.warmup_steps ({t.warmup_steps}) must be below training.iters ({t.iters}); "
            "lower the warmup or raise iters"
        )
    else:
        facts.append(f"warmup {t.warmup_steps} < {t.iters} iters")
    if model_config is None:
        notes.append("LoRA layers and context length not checked: the model's config.json is unreadable")
    else:
        layers = config_value(model_config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
        if not isinstance(layers, int):
            notes.append("the model's config.json has no num_hidden_layers: training.lora.layers not checked")
        elif t.lora.layers > layers:
            problems.append(
                f"training.lora.layers ({t.lora.layers}) exceeds the model's {layers} layers; "
                f"set it to {layers} or less (-1 adapts all)"
            )
        else:
            n = layers if t.lora.layers < 0 else t.lora.layers
            facts.append(f"LoRA on {n} of {layers} layers")
        ctx = context_length(model_config)
        if ctx is None:
            notes.append("the model's config.json gives no context length: max_seq_len_tokens not checked")
        elif t.max_seq_len_tokens > ctx:
            problems.append(
                f"training.max_seq_len_tokens ({t.max_seq_len_tokens}) exceeds the model's context of "
                f"{ctx} tokens; set it to {ctx} or less"
            )
        else:
            facts.append(f"{t.max_seq_len_tokens} <= {ctx} context tokens")
    if problems:
        first = problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        return [result("config", Level.FAIL, first, tuple(problems))]
    if notes:
        return [result("config", Level.WARN, notes[0], tuple(notes))]
    return [result("config", Level.OK, "; ".join(facts))]


def check_model(
    cfg: Config,
    model_config: dict[str, Any] | None,
    config_error: str | None,
    weights: WeightsScan,
) -> list[CheckResult]:
    """Results ``model.config``, ``model.type``, ``model.weights``, ``model.quantization``,
    ``model.tokenizer`` and ``model.chat_template`` for ``paths.base_model``."""
    model_dir = cfg.paths.base_model
    out: list[CheckResult] = []
    if model_config is None:
        out.append(result("model.config", Level.FAIL, config_error or f"{model_dir}/{CONFIG_FILE} unreadable"))
    elif "model_type" not in model_config:
        out.append(result("model.config", Level.FAIL, f"{model_dir / CONFIG_FILE} has no model_type; re-download it"))
        model_config = None
    else:
        out.append(result("model.config", Level.OK, f"{model_dir / CONFIG_FILE}: model_type {model_config['model_type']}"))
        out.append(_model_type_result(cfg, model_config))
    out.append(_weights_result(weights))
    if model_config is not None:
        out.append(_quantization_result(model_config, weights))
    out.append(_tokenizer_result(model_dir))
    out.append(_template_result(model_dir))
    return out


def _model_type_result(cfg: Config, config: dict[str, Any]) -> CheckResult:
    info = mlx_lm_info()
    model_type = str(config["model_type"])
    if not info.version or info.models_dir is None:
        return result("model.type", Level.FAIL, "mlx-lm is not installed in this environment; pip install mlx-lm")
    if config.get("model_file"):
        return result(
            "model.type",
            Level.FAIL,
            f"config.json asks for custom model code ({config['model_file']}); nightshift never runs "
            "remote code: use a model mlx-lm supports natively",
        )
    module = info.module_for(config)
    vlm = is_vision_language(config)
    via = f" (as {module})" if module != model_type else ""
    if info.supports(module):
        if not vlm:
            return result("model.type", Level.OK, f"model_type {model_type} is supported by mlx-lm {info.version}{via}")
        text = (
            f"{model_type} is a vision-language checkpoint: mlx-lm {info.version} loads its text tower"
            f"{via} and drops the vision/audio weights, so training and evaluation are text-only"
        )
        if cfg.promotion.fuse:
            return result(
                "model.type",
                Level.WARN,
                text + "; promotion.fuse would write a text-only model: serve the adapter with mlx-vlm "
                "instead or set promotion.fuse: false",
            )
        return result("model.type", Level.OK, text)
    if vlm:
        return result(
            "model.type",
            Level.FAIL,
            f"{model_type} is a vision-language model mlx-lm {info.version} cannot load "
            f"(no mlx_lm/models/{module}.py); it needs mlx-vlm, which nightshift does not drive: "
            "use its text-only variant or a model mlx-lm supports",
        )
    return result(
        "model.type",
        Level.FAIL,
        f"model_type {model_type} is not supported by mlx-lm {info.version} "
        f"(no mlx_lm/models/{module}.py); upgrade mlx-lm or pick a supported model",
    )


def _weights_result(scan: WeightsScan) -> CheckResult:
    if scan.problems:
        first = scan.problems[0] + (f" (+{len(scan.problems) - 1} more)" if len(scan.problems) > 1 else "")
        return result("model.weights", Level.FAIL, first, tuple(scan.problems + scan.notes))
    summary = f"{len(scan.shards)} shard(s), {format_bytes(scan.data_bytes)} of tensors, headers complete"
    if scan.notes:
        return result("model.weights", Level.WARN, scan.notes[0] + f" ({summary})", tuple(scan.notes))
    return result("model.weights", Level.OK, summary)


def _quantization_result(config: dict[str, Any], scan: WeightsScan) -> CheckResult:
    quant = quantization(config)
    if quant is not None:
        bits = quant.get("bits") or quant.get("weight_bits")
        method = quant.get("mode") or quant.get("quant_method") or "affine"
        group = quant.get("group_size")
        what = f"{bits}-bit {method}" if bits else str(method)
        if group:
            what += f", group size {group}"
        return result("model.quantization", Level.OK, f"quantized ({what}): training is QLoRA (LoRA on a quantized base)")
    dtype = scan.dtypes.most_common(1)[0][0] if scan.dtypes else "unknown dtype"
    return result("model.quantization", Level.OK, f"unquantized {dtype} weights: training is LoRA")


def _tokenizer_result(model_dir: Path) -> CheckResult:
    found = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    found += [p.name for p in model_dir.glob("*.tiktoken")]
    if (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
        found.append("vocab.json+merges.txt")
    if not found:
        return result(
            "model.tokenizer",
            Level.FAIL,
            f"no tokenizer in {model_dir} (tokenizer.json, tokenizer.model, *.tiktoken or vocab.json+merges.txt); "
            "copy the tokenizer files from the original model",
        )
    tok_cfg = model_dir / "tokenizer_config.json"
    if not tok_cfg.is_file():
        return result(
            "model.tokenizer",
            Level.WARN,
            f"{', '.join(found)} present but tokenizer_config.json is missing; copy it from the original model",
        )
    try:
        json.loads(tok_cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return result("model.tokenizer", Level.FAIL, f"tokenizer_config.json is not valid JSON ({exc}); re-download it")
    return result("model.tokenizer", Level.OK, f"{', '.join(found)} and tokenizer_config.json present")


def _template_result(model_dir: Path) -> CheckResult:
    from daemon.preflight.template import compile_template

    try:
        template, source = load_chat_template(model_dir)
    except ModelFileError as exc:
        return result("model.chat_template", Level.FAIL, str(exc))
    if template is None:
        return result(
            "model.chat_template",
            Level.FAIL,
            f"no chat template in {model_dir} (chat_template.jinja, chat_template.json or tokenizer_config.json "
            "chat_template); use the instruct/-it checkpoint or add its chat_template.jinja",
        )
    try:
        compile_template(template)
    except TemplateError as exc:
        return result("model.chat_template", Level.FAIL, f"{source}: {exc}; fix or re-download the template")
    return result("model.chat_template", Level.OK, f"chat template from {source}")
