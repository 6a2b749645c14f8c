"""Training throughput on CPU: medchat's recipe vs the original project's, flan-t5-base-shaped.

Both fine-tune all parameters of the same randomly initialised flan-t5-base-shaped model on the
same MedQuAD examples, fp32, AdamW, batch 8:
  original  inputs padded to 128 and labels padded to 512 with the pad id (the loss averages over
            padding and every step runs 512 decoder positions), random batches.
  medchat   dynamic padding per batch, labels padded with -100, batches grouped by length, answers
            truncated at max_target_length (512 = the original's cap, and 256 = our preset).
Then LoRA and QLoRA step time and peak memory with our recipe. Each recipe runs in its own
process so peak RSS is its own.

    python benchmarks/train_throughput.py --data .dev/data/medquad --examples 48
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import time
from pathlib import Path

from _shared import base_shaped_model_dir, read_rows


def _batches_original(rows, tokenizer, batch_size, seed):
    import torch

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    for i in range(0, len(order), batch_size):
        chunk = [rows[j] for j in order[i : i + batch_size]]
        src = tokenizer(
            [r["prompt"] for r in chunk],
            padding="max_length",
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        # The original's bug, reproduced on purpose: labels padded to 512 with the pad id.
        tgt = tokenizer(
            [r["answer"] for r in chunk],
            padding="max_length",
            truncation=True,
            max_length=512,
            return_tensors="pt",
        )
        yield (
            {
                "input_ids": src["input_ids"],
                "attention_mask": src["attention_mask"],
                "labels": tgt["input_ids"],
            },
            torch.numel(tgt["input_ids"]),
        )


def _batches_medchat(rows, tokenizer, batch_size, max_target, seed):
    from transformers import DataCollatorForSeq2Seq
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from medchat.config import load_config
    from medchat.train.train import TokenizedPairs

    cfg = load_config(None, [f"data.max_target_length={max_target}"])
    ds = TokenizedPairs(
        [{"question": r["question"], "answer": r["answer"]} for r in rows], tokenizer, cfg
    )
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    import torch

    g = torch.Generator().manual_seed(seed)
    order = list(LengthGroupedSampler(batch_size, dataset=ds, lengths=ds.lengths(), generator=g))
    for i in range(0, len(order), batch_size):
        batch = collate([ds[j] for j in order[i : i + batch_size]])
        yield batch, int((batch["labels"] != -100).sum())


def _run(
    recipe: str, model_dir: str, rows: list[dict], batch_size: int, seed: int, max_steps: int, queue
) -> None:
    import torch
    from transformers import AutoTokenizer

    from medchat.config import LoraSettings, QuantSettings
    from medchat.models import modeling
    from medchat.models.qlora_fix import keep_4bit_trainable
    from medchat.prompts import format_prompt

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for r in rows:
        r["prompt"] = format_prompt(r["question"])
    method = recipe.split("@")[0].replace("original", "full").replace("medchat", "full")
    quant = QuantSettings() if method == "qlora" else None
    model = modeling.load_pretrained(model_dir, quant=quant)
    if method in ("lora", "qlora"):
        model = modeling.attach_lora(model, LoraSettings(), quantized=method == "qlora")
        if method == "qlora":
            keep_4bit_trainable(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if recipe == "original":
        batches = list(_batches_original(rows, tokenizer, batch_size, seed))
    else:
        max_target = int(recipe.split("@")[1]) if "@" in recipe else 256
        batches = list(_batches_medchat(rows, tokenizer, batch_size, max_target, seed))

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step({k: v[:2] for k, v in batches[0][0].items()})  # warm-up: allocator, kernels
    if max_steps:
        # The original pads every batch to the same shape, so every step costs the same and a few
        # steps time it exactly; LoRA/QLoRA report step time on the first batches of ours.
        batches = batches[:max_steps]
    start = time.perf_counter()
    for batch, _ in batches:
        step(batch)
    seconds = time.perf_counter() - start
    n = sum(b[0]["input_ids"].shape[0] for b in batches)
    trainable, total = modeling.count_parameters(model)
    queue.put({
        "recipe": recipe, "examples": n, "seconds": seconds, "examples_per_s": n / seconds,
        "step_s": seconds / len(batches), "decoder_positions": sum(b[0]["labels"].numel() for b in batches),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "trainable": trainable, "total": total,
    })  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a `medchat data prepare` folder")
    ap.add_argument("--examples", type=int, default=48, help="examples per recipe (same ones)")
    ap.add_argument(
        "--fixed-shape-steps",
        type=int,
        default=2,
        help="steps timed for the original (fixed shape) and for LoRA/QLoRA",
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", default="original,medchat@512,medchat@256,lora@256,qlora@256")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    model_dir = str(base_shaped_model_dir(args.data))
    rows = read_rows(args.data, "train")
    rows = random.Random(args.seed).sample(rows, args.examples)
    ctx = mp.get_context("spawn")
    results = {}
    for recipe in args.recipes.split(","):
        q = ctx.Queue()
        steps = 0 if recipe.startswith("medchat") else args.fixed_shape_steps
        p = ctx.Process(
            target=_run, args=(recipe, model_dir, rows, args.batch_size, args.seed, steps, q)
        )
        p.start()
        results[recipe] = q.get()
        p.join()
        r = results[recipe]
        print(
            f"{recipe:14} {r['examples_per_s']:.3f} ex/s  {r['step_s']:.1f} s/step  peak RSS {r['peak_rss_gib']:.2f} GiB",
            flush=True,
        )

    import torch

    base = results.get("original")
    print(
        f"\nCPU, {torch.get_num_threads()} threads; {args.examples} MedQuAD train examples, batch {args.batch_size}, fp32"
    )
    print(
        f"{'recipe':14} {'ex/s':>7} {'s/step':>7} {'dec.pos':>8} {'peak GiB':>9} {'trainable':>12} {'vs original':>12}"
    )
    for name, r in results.items():
        ratio = r["examples_per_s"] / base["examples_per_s"] if base else float("nan")
        print(
            f"{name:14} {r['examples_per_s']:7.3f} {r['step_s']:7.2f} {r['decoder_positions']:8d} {r['peak_rss_gib']:9.2f} {r['trainable']:12,} {ratio:11.2f}x"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
