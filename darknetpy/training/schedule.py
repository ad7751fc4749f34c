"""Darknet's learning-rate schedule (``network.c: get_current_rate``), a pure function.

``batch_num`` is darknet's ``get_current_batch`` = ``seen / (batch * subdivisions)``: at the update of
iteration k (1-based) it equals k. The C code mixes float and double arithmetic; the functions below
reproduce the same float32 roundings so the rates match darknet's bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..model.cfg import Options, read_cfg
from ..model.netconfig import NetConfig, Policy, parse_net_options

f32 = np.float32


def _burn_in(batch_num: int, net: NetConfig) -> float:
    ratio = f32(f32(batch_num) / f32(net.burn_in))  # (float)batch_num / net.burn_in
    return float(f32(float(f32(net.learning_rate)) * math.pow(float(ratio), float(f32(net.power)))))


def current_rate(batch_num: int, net: NetConfig, rng: np.random.Generator | None = None) -> float:
    """Learning rate at ``batch_num``, as darknet's ``get_current_rate`` (``src/network.c``).

    Args:
        batch_num: darknet's current batch (iterations completed, counting the current update).
        net: the ``[net]`` settings.
        rng: only for ``policy=random`` (``rand_uniform(0, 1) ** power``).
    """
    lr = f32(net.learning_rate)
    if batch_num < net.burn_in:
        return _burn_in(batch_num, net)
    policy = net.policy
    if policy is Policy.CONSTANT:
        return float(lr)
    if policy is Policy.STEP:
        return float(f32(float(lr) * math.pow(float(f32(net.scale)), batch_num // net.step)))
    if policy is Policy.STEPS:
        rate = lr
        for step, scale in zip(net.steps, net.scales):
            if step > batch_num:
                return float(rate)
            rate = f32(rate * f32(scale))
        return float(rate)
    if policy is Policy.EXP:
        return float(f32(float(lr) * math.pow(float(f32(net.gamma)), batch_num)))
    if policy is Policy.POLY:
        base = f32(f32(1) - f32(f32(batch_num) / f32(net.max_batches)))
        return float(f32(float(lr) * math.pow(float(base), float(f32(net.power)))))
    if policy is Policy.RANDOM:
        draw = (rng or np.random.default_rng()).uniform(0.0, 1.0)
        return float(f32(float(lr) * math.pow(draw, float(f32(net.power)))))
    if policy is Policy.SIGMOID:
        exponent = float(f32(f32(net.gamma) * f32(batch_num - net.step)))  # float product in C
        denominator = math.inf if exponent > 709 else 1.0 + math.exp(exponent)  # C's exp overflows to inf
        return float(f32(float(lr) * (1.0 / denominator)))
    if policy is Policy.SGDR:
        start, cycle = 0, net.sgdr_cycle
        while start + cycle < batch_num:
            start += cycle
            cycle *= net.sgdr_mult
        lr_min = f32(net.learning_rate_min)
        angle = float(f32(batch_num - start)) * 3.14159265 / cycle
        return float(f32(float(lr_min) + 0.5 * float(f32(lr - lr_min)) * (1.0 + math.cos(angle))))
    raise AssertionError(f"unhandled policy {policy}")  # Policy is a closed Enum


def learning_rate(cfg: str | Path | NetConfig, batch_num: int,
                  rng: np.random.Generator | None = None) -> float:
    """``get_current_rate`` for the ``[net]`` of a cfg file (or a :class:`NetConfig`) at ``batch_num``.

    Example:
        >>> from darknetpy.model.netconfig import NetConfig, Policy
        >>> learning_rate(NetConfig(learning_rate=0.001, burn_in=1000), 500)  # (500/1000)**4 * lr
        6.25e-05
    """
    if not isinstance(cfg, NetConfig):
        sections = read_cfg(cfg)
        cfg = parse_net_options(Options(sections[0]))
    return current_rate(batch_num, cfg, rng)
