"""The optimisers behind the calibrators, numpy only (no scipy on the Pi).

Mean logistic loss, bounded golden-section search (temperature), damped Newton for an
L2-penalised logistic regression with a handful of columns (Platt) and L-BFGS for one with
many (the refit head on 1280-d features). They minimise; they do not validate their inputs
(the calibrators do) and know nothing about findings or records.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kiosk.stats import FloatArray, sigmoid


def logistic_loss(eta: FloatArray, y: FloatArray) -> float:
    """Mean logistic loss of linear predictor ``eta`` for 0/1 labels ``y``."""
    return float(np.mean(np.logaddexp(0.0, eta) - y * eta))


def golden_min(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-7) -> float:
    """Minimise a unimodal function on [lo, hi] by golden-section search."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c = b - ratio * (b - a)
    d = a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    best = (a + b) / 2.0
    ends = [(f(lo), lo), (f(best), best), (f(hi), hi)]
    return min(ends)[1]


def newton_logistic(
    X: FloatArray, y: FloatArray, l2: FloatArray, max_iter: int = 100, tol: float = 1e-10
) -> FloatArray:
    """L2-penalised logistic regression by damped Newton (IRLS); for a handful of columns."""
    n, p = X.shape
    w = np.zeros(p)

    def objective(v: FloatArray) -> float:
        return logistic_loss(X @ v, y) + 0.5 * float(np.sum(l2 * v * v))

    f = objective(w)
    for _ in range(max_iter):
        mu = sigmoid(X @ w)
        grad = X.T @ (mu - y) / n + l2 * w
        hess = (X.T * (mu * (1.0 - mu))) @ X / n + np.diag(l2) + 1e-12 * np.eye(p)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            w_new = w - t * step
            f_new = objective(w_new)
            if f_new <= f - 1e-4 * t * float(grad @ step) or t < 1e-10:
                break
            t *= 0.5
        converged = abs(f - f_new) < tol
        w, f = w_new, f_new
        if converged or float(np.max(np.abs(t * step))) < 1e-12:
            break
    return w


def lbfgs_logistic(
    X: FloatArray,
    y: FloatArray,
    l2: float,
    w0: FloatArray | None = None,
    max_iter: int = 500,
    memory: int = 10,
    gtol: float = 1e-6,
) -> FloatArray:
    """L2-penalised logistic regression (intercept last, unpenalised) by L-BFGS.

    Costs O(n * D) per iteration, so it suits 1280-d features where a Newton step would not.
    """
    n, p = X.shape
    pen = np.full(p, l2)
    pen[-1] = 0.0

    def fg(v: FloatArray) -> tuple[float, FloatArray]:
        eta = X @ v
        f = logistic_loss(eta, y) + 0.5 * float(np.sum(pen * v * v))
        g = X.T @ (sigmoid(eta) - y) / n + pen * v
        return f, g

    w = np.zeros(p) if w0 is None else w0.copy()
    f, g = fg(w)
    s_hist: list[FloatArray] = []
    y_hist: list[FloatArray] = []
    for _ in range(max_iter):
        if float(np.max(np.abs(g))) < gtol:
            break
        q = g.copy()
        coefs: list[tuple[float, float]] = []
        for s_k, y_k in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(y_k @ s_k)
            a = rho * float(s_k @ q)
            q -= a * y_k
            coefs.append((rho, a))
        if s_hist:
            gamma = float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        else:
            gamma = 1.0 / max(1.0, float(np.linalg.norm(g)))
        r = gamma * q
        for (s_k, y_k), (rho, a) in zip(
            zip(s_hist, y_hist, strict=True), reversed(coefs), strict=True
        ):
            b = rho * float(y_k @ r)
            r += (a - b) * s_k
        d = -r
        gd = float(g @ d)
        if gd >= 0.0:
            d, gd = -g, -float(g @ g)
            s_hist.clear()
            y_hist.clear()
        t = 1.0
        while True:
            w_new = w + t * d
            f_new, g_new = fg(w_new)
            if f_new <= f + 1e-4 * t * gd:
                break
            t *= 0.5
            if t < 1e-12:
                return w
        s_k, y_k = w_new - w, g_new - g
        if float(s_k @ y_k) > 1e-12:
            s_hist.append(s_k)
            y_hist.append(y_k)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        done = abs(f - f_new) < 1e-12 * max(1.0, abs(f))
        w, f, g = w_new, f_new, g_new
        if done:
            break
    return w
