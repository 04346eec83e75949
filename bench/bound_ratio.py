"""How loose the worst case is: what strict mode reserves over what a call really costs.

Run on demand (not in CI), after ``pip install bpe-openai`` (OpenAI's o200k_base
tokenizer with its data bundled, no network):

    python -m bench.bound_ratio

For English, Chinese and code prompts on gpt-4o at its list prices, it prints the
prompt bound against the real prompt tokens (o200k_base with OpenAI's chat
framing: 3 tokens a message, 3 for the reply) and the reservation against the
real cost of a call with ``max_tokens: 200`` answered in full and in 50 tokens.
"""

from __future__ import annotations

import argparse
from typing import Any

from proxy.call.bound import worst_case
from proxy.call.cost import resolve_price

ENGLISH = (
    "Budgets in a metered gateway must hold under concurrency: every call reserves "
    "its worst case before it goes upstream, and settles to its real cost after. "
    "Summarise the trade-offs of reserving an upper bound instead of an estimate, "
    "in three short paragraphs for an operator who runs the proxy for a large team."
)
CHINESE = (
    "在一个计量网关中，预算必须在并发情况下依然成立：每个调用在发送到上游之前都要预留其最坏情况的费用，"
    "完成后再按实际费用结算。请用三段简短的文字，为负责为大型团队运行代理的运维人员总结"
    "预留上界而不是估计值的利弊。"
)
CODE = '''def reserve(ctx, claims):
    """Reserve the call's worst case against every claimed entity, or nothing."""
    moment = time.time()
    by_kind = {g.kind: g for g in claims}
    ordered = [by_kind[kind] for kind in LOCK_ORDER if kind in by_kind]
    with database.atomic() as txn:
        spend = {g.kind: _lock_spend(g) for g in ordered}
        held = _held(ordered, moment)
        if not all(held[k] + spend[k] + ctx.estimated_cost <= budget(k) for k in spend):
            txn.rollback()
            return refusal(ctx)
    return None
# Review this function for race conditions and explain each in one sentence.
'''
PROMPTS = {"English": ENGLISH, "Chinese": CHINESE, "Code": CODE}
MAX_TOKENS = 200


def real_prompt_tokens(encoding: Any, messages: list[dict[str, str]]) -> int:
    """OpenAI's count for a chat prompt (its cookbook: 3 a message, 3 for the reply)."""
    return 3 + sum(3 + sum(len(encoding.encode(v)) for v in m.values()) for m in messages)


def measure() -> list[dict[str, Any]]:
    import bpe_openai

    encoding = bpe_openai.get_encoding("o200k_base")
    price = resolve_price("gpt-4o", "openai", None)
    rows = []
    for name, text in PROMPTS.items():
        messages = [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": text},
        ]
        body = {"model": "gpt-4o", "messages": messages, "max_tokens": MAX_TOKENS}
        bound = worst_case(price, body, "chat")
        prompt = real_prompt_tokens(encoding, messages)
        real_full = prompt * price.rates.input + MAX_TOKENS * price.rates.output
        real_short = prompt * price.rates.input + 50 * price.rates.output
        rows.append(
            {
                "prompt": name,
                "chars": len(text),
                "bytes": len(text.encode()),
                "real_prompt_tokens": prompt,
                "bound_prompt_tokens": bound.prompt_tokens,
                "prompt_ratio": bound.prompt_tokens / prompt,
                "reserved": bound.cost,
                "ratio_full_answer": bound.cost / real_full,
                "ratio_50_token_answer": bound.cost / real_short,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| prompt | chars | UTF-8 bytes | real prompt tokens | bound | prompt ratio "
        f"| reserved (USD) | ratio, {MAX_TOKENS}-token answer | ratio, 50-token answer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['prompt']} | {r['chars']} | {r['bytes']} | {r['real_prompt_tokens']} "
            f"| {r['bound_prompt_tokens']} | {r['prompt_ratio']:.2f} | {r['reserved']:.6f} "
            f"| {r['ratio_full_answer']:.2f} | {r['ratio_50_token_answer']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print(table(measure()))


if __name__ == "__main__":
    main()
