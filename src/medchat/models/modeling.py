"""Load a base seq2seq model and tokenizer; build the offline `tiny` model; attach LoRA / QLoRA.

peft and bitsandbytes are imported lazily: they are extras (`medchat[train]`, `medchat[qlora]`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medchat.config import LoraSettings, QuantSettings, TinyModelConfig
from medchat.errors import MedchatError
from medchat.runs import check_spec, describe

log = logging.getLogger(__name__)

TINY = "tiny"
# T5's own special-token ids; the tiny tokenizer keeps them so generation settings match flan-t5.
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


# ----------------------------------------------------------------------------- precision


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' on a GPU that supports it, else 'fp32'. fp16 is refused (T5 overflows)."""
    if precision == "fp16":
        raise MedchatError("fp16 is refused for T5: activations overflow; use bf16 or fp32")
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    if precision == "bf16" and not torch.cuda.is_available():
        log.warning("bf16 requested on CPU: supported, but usually slower than fp32 here")
    return precision


# ----------------------------------------------------------------------------- tiny model


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a unigram tokenizer (flan-t5's kind) on `texts`, with T5's pad/eos/unk ids 0/1/2.

    The vocabulary is learnt by SentencePiece on one thread, which is deterministic: the same
    texts give the same vocabulary in every process, so a seeded tiny run is reproducible (the
    `tokenizers` trainers tie-break through randomly seeded hash maps and differ per process).
    """
    import io

    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece=PAD, eos_piece=EOS, unk_piece=UNK,
        normalization_rule_name="identity",  # normalisation happens in the tokenizer below
        hard_vocab_limit=False,  # a small corpus may not fill the vocabulary; don't fail
        num_threads=1,
        minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    # T5 appends </s> to every encoded sequence; do the same so labels end with EOS.
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=512
    )


def t5_config(vocab_size: int, **shape: Any):
    """A flan-t5-like T5Config (gated-GELU FFN, untied output head, pad=decoder start=0, eos=1)."""
    from transformers import T5Config

    base = dict(
        vocab_size=vocab_size,
        feed_forward_proj="gated-gelu",
        # flan-t5 does not tie its output head and does not rescale the decoder output.
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        dropout_rate=0.1,
    )
    base.update(shape)
    config = T5Config(**base)
    # transformers 5.x T5Config forces tie_word_embeddings=True in __init__ (keeping only
    # scale_decoder_outputs=False); untie after construction so lm_head is its own weight, as in
    # flan-t5. Checkpoints then hold a distinct lm_head.weight, which from_pretrained keeps.
    config.tie_word_embeddings = False
    return config


def flan_t5_base_shaped_config(vocab_size: int = 32128):
    """The shape of google/flan-t5-base (248M params), for offline speed and memory measurements."""
    return t5_config(
        vocab_size, d_model=768, d_ff=2048, d_kv=64, num_heads=12, num_layers=12,
        num_decoder_layers=12, relative_attention_num_buckets=32,
    )  # fmt: skip


def init_untied_head_(model) -> None:
    """Initialise an untied output head at std d_model**-0.5.

    transformers inits it at std 1.0 and, untied, does not rescale the decoder output, so a fresh
    model starts near loss 60 instead of ln(vocab) (measured: step-50 loss 31.9 vs 6.75).
    """
    std = model.config.d_model**-0.5
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, std)


def build_model_from_config(config, seed: int):
    """A T5 with random weights (seeded), its head initialised sanely."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    # Untying the config also unties the encoder/decoder input embeddings from `shared`; flan-t5
    # shares one input embedding (and only its output head is separate), so re-share it.
    model.set_input_embeddings(model.shared)
    init_untied_head_(model)
    return model


def build_tiny(texts: Iterable[str], tiny: TinyModelConfig, seed: int):
    """Tokenizer trained on `texts` plus a small random T5 shaped by `tiny`."""
    tokenizer = train_tiny_tokenizer(texts, tiny.vocab_size)
    config = t5_config(
        len(tokenizer), d_model=tiny.d_model, d_ff=tiny.d_ff, d_kv=tiny.d_kv,
        num_heads=tiny.num_heads, num_layers=tiny.num_layers, num_decoder_layers=tiny.num_layers,
    )  # fmt: skip
    return build_model_from_config(config, seed), tokenizer


# ----------------------------------------------------------------------------- hub / local


def _hub_error(name: str, kind: str, e: Exception) -> MedchatError:
    if Path(name).expanduser().is_dir():
        return MedchatError(f"cannot load the {kind} in {name}: {e}")
    return MedchatError(
        f"cannot load {kind} {name!r}: there is no folder {name!r} here, and as a Hugging Face "
        f"hub id it could not be fetched ({str(e).splitlines()[0]}). Give a run or model folder, "
        "a hub id (needs the internet or a cached copy), or model.name=tiny for the offline model."
    )


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    target = str(check_spec(name, "tokenizer"))  # "~/run" expanded; a hub id unchanged
    try:
        return AutoTokenizer.from_pretrained(target)
    except OSError as e:
        raise _hub_error(name, "tokenizer", e) from None


def quantization_config(q: QuantSettings):
    """BitsAndBytesConfig for QLoRA: NF4, double quantisation, bf16 compute where supported."""
    from transformers import BitsAndBytesConfig

    compute = q.compute_dtype
    if compute == "auto":
        compute = "bf16" if bf16_supported() else "fp32"
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if compute == "bf16" else torch.float32,
        # T5's output head is kept in full precision, as in the QLoRA paper's recipe.
        llm_int8_skip_modules=["lm_head"],
    )


def require_bitsandbytes() -> None:
    """Raise a clear error when 4-bit cannot run here."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library
        raise MedchatError(
            f"QLoRA needs bitsandbytes, which cannot be used here ({e}). "
            "Install it with `pip install 'medchat[qlora]'`, or use method=lora."
        ) from None


def load_pretrained(name: str, quant: QuantSettings | None = None, dtype: str = "fp32"):
    """Load a seq2seq model by hub id or local folder; 4-bit when `quant` is given."""
    from transformers import AutoModelForSeq2SeqLM

    kwargs: dict[str, Any] = {}
    if quant is not None:
        require_bitsandbytes()
        kwargs["quantization_config"] = quantization_config(quant)
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    elif dtype == "bf16":
        kwargs["dtype"] = torch.bfloat16
    target = str(check_spec(name))  # "~/run" expanded; a hub id unchanged
    try:
        return AutoModelForSeq2SeqLM.from_pretrained(target, **kwargs)
    except OSError as e:
        raise _hub_error(name, "model", e) from None


# ----------------------------------------------------------------------------- adapters


def attach_lora(model, lora: LoraSettings, quantized: bool, gradient_checkpointing: bool = False):
    """Wrap `model` with a LoRA adapter; for 4-bit bases, prepare it for k-bit training first."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    return get_peft_model(model, config)


def _numel(p: torch.nn.Parameter) -> int:
    # bitsandbytes packs two 4-bit values per byte; its quant_state keeps the real shape.
    qs = getattr(p, "quant_state", None)
    if qs is not None and getattr(qs, "shape", None) is not None:
        return math.prod(qs.shape)
    return p.numel()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, counting 4-bit weights unpacked."""
    trainable = total = 0
    for p in model.parameters():
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


# ----------------------------------------------------------------------------- load a SPEC


class SerialTokenizer:
    """A tokenizer that one thread uses at a time.

    Fast (Rust) tokenizers are not thread-safe: encoding with truncation or padding mutates the
    tokenizer, and a second thread in it fails with "Already borrowed". Serving uses one
    tokenizer from several threads (the model worker, rag grounding in `asyncio.to_thread`,
    a streamer's decode, the UI's columns), so every method call holds one lock. Attributes
    pass through; the calls are short (a prompt is at most 512 tokens), so the lock is cheap.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.__dict__["_tokenizer"] = tokenizer
        self.__dict__["_lock"] = threading.RLock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tokenizer, name)
        if not callable(attr):
            return attr
        lock = self._lock

        def serial(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return serial

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tokenizer, name, value)


def serial_tokenizer(tokenizer: Any) -> Any:
    """`tokenizer` made safe to share between threads (idempotent)."""
    return tokenizer if isinstance(tokenizer, SerialTokenizer) else SerialTokenizer(tokenizer)


@dataclass
class LoadedModel:
    """A model ready to answer, with what it is and how it must be prompted.

    Its tokenizer is a `SerialTokenizer`: serving shares one loaded model between threads.
    """

    name: str
    model: Any
    tokenizer: Any
    spec: str
    kind: str  # "pretrained" | "full" | "lora" | "qlora"
    base: str  # the base weights it sits on (hub id or folder)
    prompt_template: str
    quantized: bool = False

    def __post_init__(self) -> None:
        self.tokenizer = serial_tokenizer(self.tokenizer)

    def fingerprint(self) -> str:
        """A short stable id of the weights (for caching predictions)."""
        import hashlib

        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.base}|{self.quantized}".encode())
        spec = Path(self.spec)
        if spec.is_dir():  # a run or model folder: its weight files' names, sizes and times
            for p in sorted(spec.rglob("*.safetensors")):
                st = p.stat()
                h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        else:  # a hub id
            h.update(self.spec.encode())
        return h.hexdigest()[:16]


def load_model_spec(spec: str, name: str | None = None, device: str | None = None) -> LoadedModel:
    """Load a SPEC: a run dir (full, LoRA or QLoRA), a local model dir, or a hub id.

    A QLoRA run answers on the 4-bit base it was trained on, never an unquantised copy.
    """
    d = describe(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = name or (d.path.name if d.path.exists() else spec)
    tokenizer = load_tokenizer(d.tokenizer_from)
    if d.adapter_dir is None:  # pretrained or full: the weights are the model
        model = load_pretrained(d.weights).to(device).eval()
        return LoadedModel(name, model, tokenizer, spec, d.kind, d.base, d.template)

    from peft import PeftModel

    if d.quantized:
        from medchat.config import QuantSettings

        base_model = load_pretrained(d.weights, quant=QuantSettings(**(d.quant or {})))
    else:
        base_model = load_pretrained(d.weights).to(device)
    model = PeftModel.from_pretrained(base_model, d.adapter_dir).eval()
    return LoadedModel(name, model, tokenizer, spec, d.kind, d.base, d.template, d.quantized)
