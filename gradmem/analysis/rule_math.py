"""The numbers behind the backward rules that are more than a product: written in numpy from
the formulas in torch's derivatives.yaml (and the C++ helpers it names), for small tensors.
Each takes the saved values as numpy arrays and the saved non-tensor values as Python."""
from __future__ import annotations

import math

import numpy as np

WRAP = 2 ** 64   # torch hands a saved int64 like padding_idx = -1 back as an unsigned 2**64 - 1


def signed(v):
    """A saved int64 as the program wrote it (lists too): capture stores it signed, but a trace
    written before it did holds 2**64 - 1 for -1, which no numpy index or axis can take."""
    if isinstance(v, list):
        return [signed(x) for x in v]
    return v - WRAP if isinstance(v, int) and not isinstance(v, bool) and v >= 2 ** 63 else v


def sum_to(a, shape) -> np.ndarray:
    """``a`` summed over the dimensions it was broadcast along, down to ``shape``."""
    a, shape = np.asarray(a, dtype=float), tuple(shape)
    while a.ndim > len(shape):
        a = a.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and a.shape[i] != 1:
            a = a.sum(i, keepdims=True)
    return a


def expand(g, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(g, dtype=float), tuple(shape)).copy()


def _dims(dim, ndim) -> tuple:
    dims = range(ndim) if dim is None or dim == [] else (dim if isinstance(dim, (list, tuple)) else [dim])
    return tuple(sorted(d % ndim for d in dims)) if ndim else ()


def expand_dims(g, shape, dim, keepdim) -> np.ndarray:
    """A reduction's gradient back to the input's shape: the reduced dims put back, then spread."""
    g = np.asarray(g, dtype=float)
    if not keepdim:
        for d in _dims(dim, len(shape)):
            g = np.expand_dims(g, d)
    return expand(g, shape)


def count(shape, dim) -> int:
    return int(np.prod([shape[d] for d in _dims(dim, len(shape))])) if shape else 1


def outer(a, b) -> np.ndarray:
    return np.outer(a, b)


def positive(x) -> np.ndarray:
    return (np.asarray(x) > 0).astype(float)


def above(x, threshold) -> np.ndarray:
    return (np.asarray(x) > threshold).astype(float)


def gelu_slope(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def sum_keep(a, dim) -> np.ndarray:
    return np.asarray(a, dtype=float).sum(axis=dim, keepdims=True)


def log(a) -> np.ndarray:
    return np.log(np.asarray(a, dtype=float))


def exp(a) -> np.ndarray:
    return np.exp(np.asarray(a, dtype=float))


def reshape(g, shape) -> np.ndarray:
    return np.asarray(g, dtype=float).reshape(tuple(shape))


def swap(g, d0, d1) -> np.ndarray:
    return np.swapaxes(np.asarray(g, dtype=float), d0, d1)


def unpermute(g, dims) -> np.ndarray:
    return np.transpose(np.asarray(g, dtype=float), np.argsort(dims))


def squeeze(g, dim) -> np.ndarray:
    return np.squeeze(np.asarray(g, dtype=float), axis=dim)


def select_back(g, shape, dim, index) -> np.ndarray:
    out = np.zeros(tuple(shape))
    idx = [slice(None)] * len(shape)
    idx[dim] = index
    out[tuple(idx)] = g
    return out


def slice_back(g, shape, dim, start, end, step) -> np.ndarray:
    out = np.zeros(tuple(shape))
    idx = [slice(None)] * len(shape)
    idx[dim] = slice(start, min(end, shape[dim]) if end is not None else None, step)
    out[tuple(idx)] = g
    return out


def dropout_scale(p) -> float:
    return 0.0 if p == 1 else 1.0 / (1.0 - p)


# -- normalization ----------------------------------------------------------------------------
def _norm_input(g, x, mean, rstd, weight, axes):
    """(g·w − mean(g·w) − x̂ · mean(g·w · x̂)) · rstd, means over ``axes``: the gradient of
    x̂ = (x − mean) · rstd with the mean and rstd taken over those axes."""
    g = np.asarray(g, dtype=float)
    gw = g * weight if weight is not None else g
    xhat = (np.asarray(x, dtype=float) - mean) * rstd
    return (gw - gw.mean(axis=axes, keepdims=True) - xhat * (gw * xhat).mean(axis=axes, keepdims=True)) * rstd


def _layer_axes(x, normalized_shape):
    n = len(normalized_shape)
    return tuple(range(x.ndim - n, x.ndim)), tuple(range(x.ndim - n))


def layer_norm_input(g, x, mean, rstd, weight, normalized_shape):
    x = np.asarray(x, dtype=float)
    axes, _ = _layer_axes(x, normalized_shape)
    m, r = np.asarray(mean).reshape(x.shape[:x.ndim - len(axes)] + (1,) * len(axes)), None
    r = np.asarray(rstd).reshape(m.shape)
    return _norm_input(g, x, m, r, weight, axes)


def layer_norm_weight(g, x, mean, rstd, normalized_shape):
    x = np.asarray(x, dtype=float)
    axes, batch = _layer_axes(x, normalized_shape)
    shape = x.shape[:x.ndim - len(axes)] + (1,) * len(axes)
    xhat = (x - np.asarray(mean).reshape(shape)) * np.asarray(rstd).reshape(shape)
    return (np.asarray(g) * xhat).sum(axis=batch)


def layer_norm_bias(g, normalized_shape):
    g = np.asarray(g, dtype=float)
    return g.sum(axis=tuple(range(g.ndim - len(normalized_shape))))


def _channel(v, x):
    return np.asarray(v, dtype=float).reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm_input(g, x, weight, mean, invstd):
    x = np.asarray(x, dtype=float)
    axes = (0,) + tuple(range(2, x.ndim))
    w = _channel(weight, x) if weight is not None else None
    return _norm_input(g, x, _channel(mean, x), _channel(invstd, x), w, axes)


def batch_norm_weight(g, x, mean, invstd):
    x = np.asarray(x, dtype=float)
    xhat = (x - _channel(mean, x)) * _channel(invstd, x)
    return (np.asarray(g) * xhat).sum(axis=(0,) + tuple(range(2, x.ndim)))


def batch_norm_bias(g):
    g = np.asarray(g, dtype=float)
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))


# -- lookups and losses -----------------------------------------------------------------------
def embedding_back(g, indices, rows, padding_idx):
    g, idx = np.asarray(g, dtype=float), np.asarray(indices, dtype=int).reshape(-1)
    out = np.zeros((rows, g.shape[-1]))
    for i, row in zip(idx, g.reshape(-1, g.shape[-1])):
        if i != padding_idx:
            out[i] += row
    return out


MEAN, SUM = 1, 2   # torch's Reduction enum: 0 none, 1 mean, 2 sum


def nll_back(g, logp, target, weight, total_weight, reduction, ignore_index):
    logp = np.asarray(logp, dtype=float)
    target = np.asarray(target, dtype=int).reshape(-1)
    rows = logp.reshape(-1, logp.shape[-1]) if logp.ndim > 1 else logp.reshape(1, -1)
    out = np.zeros_like(rows)
    g = np.asarray(g, dtype=float).reshape(-1)
    w = np.ones(rows.shape[1]) if weight is None else np.asarray(weight, dtype=float)
    for k, t in enumerate(target):
        if t != ignore_index:
            out[k, t] = -w[t] * (g[k] if g.size > 1 else g[0])
    if reduction == MEAN:
        out = out / float(np.asarray(total_weight))
    return out.reshape(logp.shape)


def mse_back(g, a, b, reduction):
    d = 2 * (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) * np.asarray(g, dtype=float)
    return d / d.size if reduction == MEAN else d


# -- convolution and attention ----------------------------------------------------------------
def _as2d(a, ndim):
    return a[:, :, None, :] if ndim == 3 else a


def _conv_parts(x, w, stride, padding, dilation):
    sh, sw = (1, stride[0]) if len(stride) == 1 else stride
    ph, pw = (0, padding[0]) if len(padding) == 1 else padding
    dh, dw = (1, dilation[0]) if len(dilation) == 1 else dilation
    return (sh, sw), (ph, pw), (dh, dw)


def _conv_grads(g, x, w, stride, padding, dilation):
    """Gradients of a plain 2-D convolution (groups 1) for input and weight, by loops."""
    nd = np.asarray(x).ndim
    x, w, g = (_as2d(np.asarray(a, dtype=float), nd) for a in (x, w, g))
    (sh, sw), (ph, pw), (dh, dw) = _conv_parts(x, w, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dx, dW = np.zeros_like(xp), np.zeros_like(w)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows = slice(i * dh, i * dh + sh * g.shape[2], sh)
            cols = slice(j * dw, j * dw + sw * g.shape[3], sw)
            patch = xp[:, :, rows, cols]                        # (n, c, p, q)
            dW[:, :, i, j] = np.einsum("nopq,ncpq->oc", g, patch)
            dx[:, :, rows, cols] += np.einsum("nopq,oc->ncpq", g, w[:, :, i, j])
    dx = dx[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return (dx[:, :, 0, :], dW[:, :, 0, :]) if nd == 3 else (dx, dW)


def conv_input(g, x, w, stride, padding, dilation):
    return _conv_grads(g, x, w, stride, padding, dilation)[0]


def conv_weight(g, x, w, stride, padding, dilation):
    return _conv_grads(g, x, w, stride, padding, dilation)[1]


def conv_bias(g):
    g = np.asarray(g, dtype=float)
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))


def _attention(g, q, k, v, out, lse, is_causal, scale):
    q, k, v, g, out = (np.asarray(a, dtype=float) for a in (q, k, v, g, out))
    s = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
    scores = q @ np.swapaxes(k, -1, -2) * s
    if is_causal:
        scores = np.where(np.tril(np.ones(scores.shape[-2:], dtype=bool)), scores, -np.inf)
    p = np.exp(scores - np.asarray(lse, dtype=float)[..., None])
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (g * out).sum(-1, keepdims=True))
    return ds @ k * s, np.swapaxes(ds, -1, -2) @ q * s, np.swapaxes(p, -1, -2) @ g


def attention_query(g, q, k, v, out, lse, is_causal, scale):
    return _attention(g, q, k, v, out, lse, is_causal, scale)[0]


def attention_key(g, q, k, v, out, lse, is_causal, scale):
    return _attention(g, q, k, v, out, lse, is_causal, scale)[1]


def attention_value(g, q, k, v, out, lse, is_causal, scale):
    return _attention(g, q, k, v, out, lse, is_causal, scale)[2]
