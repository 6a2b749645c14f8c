"""Question -> model input. The template is saved with every run so eval uses the same one."""

from __future__ import annotations

# flan-t5 was instruction-tuned on prompts of this shape; a plain instruction prefix gives the
# base model a fair chance in the base-vs-fine-tuned comparison.
DEFAULT_TEMPLATE = "Answer this medical question: {question}"

# Model inputs are cut to this many tokens (T5 was trained on 512-token inputs). Generation,
# serving, the rag context budget and the eval cache key all read this one number.
MAX_SOURCE_TOKENS = 512

# Used by the `rag` answer mode: retrieved passages go before the question.
RAG_TEMPLATE = (
    "Answer the medical question using the context.\nContext: {context}\nQuestion: {question}"
)


def format_prompt(question: str, template: str = DEFAULT_TEMPLATE) -> str:
    """Fill the template with a question."""
    if "{question}" not in template:
        raise ValueError("prompt template must contain '{question}'")
    return template.replace("{question}", question.strip())


def format_rag_prompt(question: str, passages: list[str], template: str = RAG_TEMPLATE) -> str:
    """Fill the RAG template with a question and retrieved passages."""
    context = " ".join(p.strip() for p in passages)
    return template.replace("{context}", context).replace("{question}", question.strip())
