"""Erlang C and Erlang-A, computed here, to check the simulator against queueing theory.

Erlang C (M/M/c): Poisson arrivals at rate ``lam``, exponential service at rate ``mu`` per
agent, ``c`` agents, nobody abandons. Erlang-A (M/M/c+M): the same with exponential
patience at rate ``theta``; solved exactly as a birth-death chain (truncated where the
probabilities vanish), so abandonment and mean wait are exact, not approximations.
"""

from __future__ import annotations

import math


def erlang_c(lam: float, mu: float, c: int) -> float:
    """Probability an arrival waits (the Erlang C formula), computed stably."""
    a = lam / mu
    if a >= c:
        return 1.0
    term, total = 1.0, 1.0  # a^k / k!, summed for k < c
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c  # a^c / c!
    waiting = last * c / (c - a)
    return waiting / (total + waiting)


def erlang_c_service_level(lam: float, mu: float, c: int, target: float) -> float:
    """Share answered within ``target`` seconds: 1 - C * exp(-(c mu - lam) t)."""
    return 1.0 - erlang_c(lam, mu, c) * math.exp(-(c * mu - lam) * target)


def erlang_c_asa(lam: float, mu: float, c: int) -> float:
    """Average speed of answer (mean wait over all arrivals): C / (c mu - lam)."""
    return erlang_c(lam, mu, c) / (c * mu - lam)


def erlang_a(lam: float, mu: float, c: int, theta: float, states: int = 2000) -> dict[str, float]:
    """Erlang-A: abandonment probability, mean wait (all arrivals), probability of waiting."""
    probs = [1.0]
    for n in range(1, states):
        rate_out = min(n, c) * mu + max(n - c, 0) * theta
        probs.append(probs[-1] * lam / rate_out)
        if probs[-1] < 1e-300:
            break
    total = sum(probs)
    probs = [p / total for p in probs]
    queue = sum(max(n - c, 0) * p for n, p in enumerate(probs))
    waits = sum(p for n, p in enumerate(probs) if n >= c)  # PASTA: an arrival waits if all busy
    return {"abandonment": theta * queue / lam, "asa_seconds": queue / lam, "p_wait": waits}
