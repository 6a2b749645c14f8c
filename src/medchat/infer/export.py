"""Export a SPEC for serving: a plain merged model folder, or a CTranslate2 (int8) folder.

`merged` folds LoRA adapters into the base weights (PEFT `merge_and_unload`), so the result loads
with plain transformers and answers without PEFT. `ct2` converts that merged model with
CTranslate2's `TransformersConverter`, then checks the converted model against the torch one:
greedy tokens and per-token log-probs on a few prompts (see `verify_ct2`).

Known trap, guarded here: transformers 5.x forces `T5Config.tie_word_embeddings=True` (keeping
the real answer in `scale_decoder_outputs`), and CTranslate2's T5 loader reads
`tie_word_embeddings` to decide whether to scale decoder outputs by d_model**-0.5. flan-t5 does
not scale, so a plain conversion keeps greedy tokens (argmax is scale-free) but shrinks every
logit: scores, sampling and beam search come out wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medchat.errors import MedchatError
from medchat.fileio import atomic_output_dir, sha256_file, write_json
from medchat.models.modeling import LoadedModel
from medchat.prompts import format_prompt
from medchat.runs import PROMPT

log = logging.getLogger(__name__)

FORMATS = ("merged", "ct2")
QUANTIZATIONS = ("int8", "float32")
MANIFEST = "export_manifest.json"

# Prompts the converted model is checked on; medical-ish so real tokenizers split them normally.
CHECK_PROMPTS = (
    "What are the symptoms of diabetes?",
    "How is high blood pressure treated?",
    "What causes asthma attacks in children?",
)
CHECK_TOKENS = 16
# Mean |log-prob difference| per token allowed between the export and torch fp32. float32 agrees
# to rounding (measured 1e-6); int8 moves log-probs by about 0.1-0.2 nats on the nearly uniform
# micro test models. The scaling trap moves them by whole nats (measured 2.25: d_model**-0.5
# flattens the distribution), well above both.
SCORE_TOLERANCE = {"float32": 1e-3, "int8": 0.5}


# ----------------------------------------------------------------------------- merged


def merged_model(lm: LoadedModel):
    """The model with any LoRA adapter folded into its weights (fp32, on CPU)."""
    if lm.kind == "lora":
        return lm.model.merge_and_unload()
    if lm.kind == "qlora":
        # A 4-bit base cannot hold merged weights: fold the adapter into the fp32 base instead.
        # Answers can differ slightly from the 4-bit run the adapter was trained against.
        from peft import PeftModel

        from medchat.models.modeling import load_pretrained

        log.warning("%s: merging a QLoRA adapter into the fp32 base (not 4-bit)", lm.spec)
        base = load_pretrained(lm.base)
        adapter = Path(lm.spec) / "adapter"
        return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()
    return lm.model


def save_merged(lm: LoadedModel, out: Path) -> None:
    """Write a plain transformers model folder (weights, config, tokenizer, prompt.txt)."""
    model = merged_model(lm).to("cpu")
    model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    (out / PROMPT).write_text(lm.prompt_template, encoding="utf-8")


# ----------------------------------------------------------------------------- ct2


def _converter(model_dir: Path):
    """TransformersConverter whose T5 loader sees whether decoder outputs are really scaled."""
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            scale = getattr(model.config, "scale_decoder_outputs", None)
            if scale is not None:
                # The loader scales iff tie_word_embeddings; give it the real flag. Weights are
                # already loaded (tied or not), so this changes only what the loader reads.
                model.config.tie_word_embeddings = bool(scale)
            return model

    return Converter(str(model_dir))


def convert_ct2(model_dir: Path, out: Path, quantization: str) -> None:
    """Convert a plain model folder into `out` (which may exist and be empty)."""
    from medchat.infer.backends import require_ctranslate2

    require_ctranslate2()
    _converter(model_dir).convert(str(out), quantization=quantization, force=True)
    # The tokenizer and prompt travel with the model so the folder serves on its own.
    for name in model_dir.iterdir():
        if name.name.startswith("tokenizer") or name.name in (
            "special_tokens_map.json",
            PROMPT,
        ):
            shutil.copy2(name, out / name.name)


@torch.inference_mode()
def torch_reference(model, tokenizer, prompts: Sequence[str], n_tokens: int) -> list[dict]:
    """Greedy token ids (EOS dropped) and per-token log-probs (EOS included) from torch."""
    refs = []
    for prompt in prompts:
        enc = tokenizer([prompt], return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=n_tokens, do_sample=False, num_beams=1)
        ids = [i for i in out[0, 1:].tolist() if i not in (tokenizer.pad_token_id,)]
        if ids and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]
        labels = torch.tensor([[*ids, tokenizer.eos_token_id]])
        logits = model(**enc, labels=labels).logits.float()
        logp = torch.log_softmax(logits, dim=-1)[0].gather(1, labels[0][:, None])[:, 0]
        refs.append({"ids": ids, "log_probs": logp.tolist()})
    return refs


def ct2_outputs(translator, tokenizer, prompts: Sequence[str], refs: Sequence[dict], n_tokens: int):
    """Greedy ids from ct2, and ct2's log-probs of the torch reference tokens (EOS included)."""
    from medchat.infer.backends import ct2_ids, ct2_tokens

    sources = [tokenizer.convert_ids_to_tokens(tokenizer(p)["input_ids"]) for p in prompts]
    greedy = translator.translate_batch(sources, beam_size=1, max_decoding_length=n_tokens)
    targets = [ct2_tokens(tokenizer, r["ids"]) for r in refs]
    scored = translator.score_batch(sources, targets)
    ids = [ct2_ids(tokenizer, r.hypotheses[0]) for r in greedy]
    return ids, [s.log_probs for s in scored]


def verify_ct2(
    ct2_dir: Path,
    model,
    tokenizer,
    quantization: str,
    prompts: Sequence[str] = CHECK_PROMPTS,
    n_tokens: int = CHECK_TOKENS,
) -> dict[str, Any]:
    """Compare the converted model with torch fp32: greedy tokens and per-token log-probs."""
    import ctranslate2

    from medchat.infer.backends import cpu_threads

    translator = ctranslate2.Translator(
        str(ct2_dir), device="cpu", compute_type=quantization, intra_threads=cpu_threads()
    )
    refs = torch_reference(model, tokenizer, prompts, n_tokens)
    greedy, scores = ct2_outputs(translator, tokenizer, prompts, refs, n_tokens)
    diffs = [
        abs(a - b)
        for r, s in zip(refs, scores, strict=True)
        for a, b in zip(r["log_probs"], s, strict=True)
    ]
    lengths_ok = all(len(r["log_probs"]) == len(s) for r, s in zip(refs, scores, strict=True))
    report = {
        "prompts": len(prompts),
        "tokens_scored": len(diffs),
        "greedy_tokens_equal": sum(g == r["ids"] for g, r in zip(greedy, refs, strict=True)),
        "mean_abs_logprob_diff": round(sum(diffs) / max(len(diffs), 1), 6),
        "max_abs_logprob_diff": round(max(diffs, default=0.0), 6),
        "tolerance": SCORE_TOLERANCE[quantization],
    }
    report["ok"] = (
        lengths_ok
        and math.isfinite(report["mean_abs_logprob_diff"])
        and report["mean_abs_logprob_diff"] <= report["tolerance"]
    )
    return report


# ----------------------------------------------------------------------------- manifest


def _versions() -> dict[str, str]:
    import importlib.metadata

    from medchat.runinfo import library_versions

    out = library_versions()
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        out["ctranslate2"] = importlib.metadata.version("ctranslate2")
    return out


def write_manifest(out: Path, lm: LoadedModel, fmt: str, extra: dict[str, Any]) -> None:
    """Say what the folder is, what it came from, and hash every file in it."""
    from medchat.runinfo import git_commit

    files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
    manifest = {
        "format": fmt,
        "source_spec": str(lm.spec),
        "source_kind": lm.kind,
        "base": lm.base,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "versions": _versions(),
        "files": files,
        **extra,
    }
    write_json(out / MANIFEST, manifest)


# ----------------------------------------------------------------------------- stages


def export_merged(spec: str, out: str | Path, overwrite: bool = False) -> Path:
    """SPEC -> a plain model folder (LoRA merged), with tokenizer, prompt.txt and a manifest."""
    from medchat.models.modeling import load_model_spec

    lm = load_model_spec(spec, device="cpu")
    with atomic_output_dir(out, overwrite) as tmp:
        save_merged(lm, tmp)
        write_manifest(tmp, lm, "merged", {"merged_adapter": lm.kind in ("lora", "qlora")})
    return Path(out)


def export_ct2(
    spec: str, out: str | Path, quantization: str = "int8", overwrite: bool = False
) -> Path:
    """SPEC -> a CTranslate2 folder, verified against torch fp32 (tokens and scores)."""
    from medchat.models.modeling import load_model_spec

    if quantization not in QUANTIZATIONS:
        raise MedchatError(f"--quantization {quantization!r}: choose one of {QUANTIZATIONS}")
    lm = load_model_spec(spec, device="cpu")
    with atomic_output_dir(out, overwrite) as tmp, tempfile.TemporaryDirectory() as merged_tmp:
        merged = Path(merged_tmp)
        save_merged(lm, merged)
        convert_ct2(merged, tmp, quantization)
        from medchat.models.modeling import load_pretrained

        prompts = [format_prompt(q, lm.prompt_template) for q in CHECK_PROMPTS]
        reference = load_pretrained(str(merged)).eval()
        check = verify_ct2(tmp, reference, lm.tokenizer, quantization, prompts)
        if not check["ok"]:
            raise MedchatError(
                f"{spec}: the CTranslate2 conversion does not match torch (mean |log-prob diff| "
                f"{check['mean_abs_logprob_diff']} > {check['tolerance']}; {json.dumps(check)}); "
                "nothing was written. Check the ctranslate2/transformers versions."
            )
        write_manifest(tmp, lm, "ct2", {"quantization": quantization, "verification": check})
    return Path(out)


def export_command(args) -> None:
    """`medchat export`: run the export and say where it went."""
    from medchat.console import console

    if args.format == "merged":
        out = export_merged(args.spec, args.out, args.overwrite)
        console.print(f"merged model written to {out}")
        return
    out = export_ct2(args.spec, args.out, args.quantization, args.overwrite)
    check = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["verification"]
    console.print(
        f"CTranslate2 ({args.quantization}) model written to {out}; check vs torch fp32: "
        f"{check['greedy_tokens_equal']}/{check['prompts']} greedy answers equal, mean "
        f"|log-prob diff| {check['mean_abs_logprob_diff']:.4f} (tolerance {check['tolerance']})"
    )
