"""Why backward needs each saved tensor: the local derivative of every common backward node.

Each rule is the chain-rule step a node runs, written in the expression language of
``expr.py`` (so the text and the numbers come from one tree), with what it uses each saved
field for, and torch's own formula copied verbatim from the wheel's
``torchgen/packaged/autograd/derivatives.yaml`` (tests/oracles/test_rules.py checks the copy
against that file, and checks every rule's numbers against the gradients torch produced).

A rule is keyed by the node's name (``PowBackward0``). Its ``grads`` map the node's inputs,
in the order of ``next_functions`` (the op's tensor arguments), to their gradients; inputs
that need no gradient are skipped by autograd and left out of the text. Pure Python and
numpy: analysis imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import rule_math as m
from .expr import A, Expr, Fn, G, S


@dataclass(frozen=True)
class Rule:
    op: str                                  # the op's entry in derivatives.yaml
    grads: dict[int, Expr]                   # input index -> its gradient
    inputs: tuple[str, ...]                  # the op's argument names, in input order
    torch: dict[str, str]                    # derivatives.yaml: argument -> torch's formula, verbatim
    uses: dict[str, str] = field(default_factory=dict)   # saved field -> what the rule uses it for
    when: Callable[[dict], bool] = lambda attrs: True    # the attributes this rule is right for
    note: str = ""


def fn(name: str, text: Callable[..., str], f: Callable, *args) -> Fn:
    return Fn(name, tuple(args), text, f)


def const(name: str, text: Callable[..., str], f: Callable, *args) -> Fn:
    """A function of saved non-tensor values only: folded to its number like a constant."""
    return Fn(name, tuple(args), text, f, constant=True)


# -- building blocks ----------------------------------------------------------------------------
def expand(g, shape):
    return fn("expand", lambda a, s: f"expand({a}, {s})", m.expand, g, shape)


def sum_to(g, shape):
    return fn("sum_to", lambda a, s: f"sum_to({a}, {s})", m.sum_to, g, shape)


def reshape(g, shape):
    return fn("reshape", lambda a, s: f"reshape({a}, {s})", m.reshape, g, shape)


def sum_keep(a, dim):
    return fn("sum_keep", lambda x, d: f"Σ[dim {d}]({x})", m.sum_keep, a, dim)


def exp(a):
    return fn("exp", lambda x: f"exp({x})", m.exp, a)


def log(a):
    return fn("log", lambda x: f"log({x})", m.log, a)


SIZES = A("self_sym_sizes")
SAME = {"self": "handle_r_to_c(self.scalar_type(), grad)"}
UNARY = ("self",)
BIN = ("self", "other")


def _elementwise() -> dict[str, Rule]:
    return {
        "AddBackward0": Rule("add.Tensor", {0: G, 1: G * A("alpha")}, BIN, {
            **SAME, "other": "handle_r_to_c(other.scalar_type(), maybe_multiply(grad, alpha.conj()))"}),
        "SubBackward0": Rule("sub.Tensor", {0: G, 1: -G * A("alpha")}, BIN, {
            **SAME, "other": "handle_r_to_c(other.scalar_type(), maybe_multiply(-grad, alpha.conj()))"}),
        "RsubBackward0": Rule("rsub.Tensor", {0: -G * A("alpha"), 1: G}, BIN, {
            "self": "handle_r_to_c(self.scalar_type(), maybe_multiply(-grad, alpha.conj()))",
            "other": "handle_r_to_c(other.scalar_type(), grad)"}),
        "RsubBackward1": Rule("rsub.Scalar", {0: -G * A("alpha")}, UNARY, {
            "self": "handle_r_to_c(self.scalar_type(), maybe_multiply(-grad, alpha.conj()))"}),
        "NegBackward0": Rule("neg", {0: -G}, UNARY, {"self": "grad.neg()"}),
        "MulBackward0": Rule("mul.Tensor", {0: G * S("other"), 1: G * S("self")}, BIN, {
            "self": "mul_tensor_backward(grad, other, self.scalar_type())",
            "other": "mul_tensor_backward(grad, self, other.scalar_type())"},
            {"other": "the factor in self's gradient (d(self·other)/d(self) = other)",
             "self": "the factor in other's gradient (d(self·other)/d(other) = self)"}),
        "DivBackward0": Rule("div.Tensor", {0: G / S("other"), 1: -G * S("self") / S("other") ** 2}, BIN, {
            "self": "div_tensor_self_backward(grad, other, self.scalar_type())",
            "other": "div_tensor_other_backward(grad, self, other)"},
            {"other": "the divisor, in both gradients", "self": "the numerator, in other's gradient"}),
        "PowBackward0": Rule("pow.Tensor_Scalar", {0: G * (A("exponent") * S("self") ** (A("exponent") - 1))},
                             ("self",), {"self": "pow_backward(grad, self, exponent)"},
                             {"self": "the base of the power rule: d(self^n)/d(self) = n · self^(n−1)"}),
        "PowBackward1": Rule("pow.Tensor_Tensor", {
            0: G * (S("exponent") * S("self") ** (S("exponent") - 1)),
            1: G * (S("result") * log(S("self")))}, ("self", "exponent"), {
            "self": "pow_backward_self(grad, self, exponent)",
            "exponent": "pow_backward_exponent(grad, self, exponent, result)"},
            {"self": "the base, in both gradients", "exponent": "the power, in self's gradient",
             "result": "self^exponent, in exponent's gradient (d(a^b)/db = a^b · log a)"}),
        "ExpBackward0": Rule("exp", {0: G * S("result")}, UNARY, {"self": "grad * result.conj()"},
                             {"result": "exp(self), which is its own derivative"}),
        "LogBackward0": Rule("log", {0: G / S("self")}, UNARY, {"self": "grad.div(self.conj())"},
                             {"self": "the divisor: d(log self)/d(self) = 1/self"}),
        "SqrtBackward0": Rule("sqrt", {0: G / (2 * S("result"))}, UNARY, {"self": "grad / (2 * result.conj())"},
                              {"result": "sqrt(self): d(sqrt(self))/d(self) = 1/(2·sqrt(self))"}),
    }


def _products() -> dict[str, Rule]:
    mm1 = "mm_mat1_backward(grad, mat2, {a}.sym_sizes(), {a}.sym_strides(), {a}.layout(), {k})"
    mm2 = "mm_mat2_backward(grad, {b}, mat2.sym_sizes(), mat2.sym_strides(), mat2.layout(), {k})"
    return {
        "MmBackward0": Rule("mm", {0: G @ S("mat2").T, 1: S("self").T @ G}, ("self", "mat2"), {
            "self": mm1.format(a="self", k=1), "mat2": mm2.format(b="self", k=1)},
            {"mat2": "the other factor in self's gradient", "self": "the other factor in mat2's gradient"}),
        "MvBackward0": Rule("mv", {0: fn("outer", lambda g, v: f"outer({g}, {v})", m.outer, G, S("vec")),
                                   1: S("self").T @ G}, ("self", "vec"), {
            "self": "grad.ger(vec.conj())", "vec": "self.conj().t().mv(grad)"},
            {"self": "the matrix, in vec's gradient: d(self·vec)/d(vec) = selfᵀ",
             "vec": "the vector, in self's gradient"}),
        "DotBackward0": Rule("dot", {0: G * S("tensor"), 1: G * S("self")}, ("self", "tensor"), {
            "self": "grad * tensor.conj()", "tensor": "grad * self.conj()"},
            {"tensor": "the factor in self's gradient", "self": "the factor in tensor's gradient"}),
        "AddmmBackward0": Rule("addmm", {0: fn("bias_sum", lambda g: f"{g} summed over the rows the bias was added to",
                                                lambda g: g, G * A("beta")), 1: G @ S("mat2").T * A("alpha"),
                                         2: S("mat1").T @ G * A("alpha")}, ("self", "mat1", "mat2"), {
            "self": "maybe_multiply(grad, beta.conj())", "mat1": mm1.format(a="mat1", k="alpha"),
            "mat2": mm2.format(b="mat1", k="alpha")},
            {"mat1": "the layer's input, in the weight's gradient (mat2)",
             "mat2": "the weight (transposed), in the input's gradient (mat1)"},
            note="bias gradient summed over the batch (the bias was broadcast to every row)"),
        "BmmBackward0": Rule("bmm", {0: G @ S("mat2").T, 1: S("self").T @ G}, ("self", "mat2"), {
            "self": "grad.bmm(mat2.transpose(1, 2).conj())", "mat2": "self.transpose(1, 2).conj().bmm(grad)"},
            {"mat2": "the other factor in self's gradient", "self": "the other factor in mat2's gradient"}),
    }


def _reductions() -> dict[str, Rule]:
    dims = lambda g: fn("expand_dims", lambda a, s, d, k: f"expand({a} along dim {d}, {s})",  # noqa: E731
                        m.expand_dims, g, SIZES, A("dim"), A("keepdim"))
    count = const("count", lambda s, d: f"count({s}, {d})", m.count, SIZES, A("dim"))
    return {
        "MeanBackward0": Rule("mean", {0: expand(G, SIZES) / A("self_sym_numel")}, UNARY, {
            "self": "grad.expand_symint(self.sym_sizes()) / self.sym_numel()"}),
        "MeanBackward1": Rule("mean.dim", {0: dims(G) / count}, UNARY, {
            "self": "mean_backward(grad, self.sym_sizes(), dim, self.sym_numel(), keepdim)"}),
        "SumBackward0": Rule("sum", {0: expand(G, SIZES)}, UNARY, {"self": "grad.expand_symint(self.sym_sizes())"}),
        "SumBackward1": Rule("sum.dim_IntList", {0: dims(G)}, UNARY, {
            "self": "sum_backward(grad, self.sym_sizes(), dim, keepdim)"}),
    }


def _activations() -> dict[str, Rule]:
    return {
        "ReluBackward0": Rule("relu", {0: G * fn("positive", lambda r: f"({r} > 0)", m.positive, S("result"))},
                              UNARY, {"self": "threshold_backward(grad, result, 0)"},
                              {"result": "where the output was positive: the gradient passes there, 0 elsewhere"}),
        "ThresholdBackward0": Rule("threshold", {0: G * fn("above", lambda x, t: f"({x} > {t})", m.above,
                                                           S("self"), A("threshold"))},
                                   UNARY, {"self": "threshold_backward(grad, self, threshold)"},
                                   {"self": "where the input was above the threshold"}),
        "GeluBackward0": Rule("gelu", {0: G * fn("gelu_slope", lambda x: f"(Φ({x}) + {x} · φ({x}))", m.gelu_slope,
                                                 S("self"))},
                              UNARY, {"self": "gelu_backward(grad, self, approximate)"},
                              {"self": "the input, where gelu's slope Φ(x) + x·φ(x) is taken"},
                              when=lambda a: a.get("approximate") == "none"),
        "SigmoidBackward0": Rule("sigmoid", {0: G * (S("result") * (1 - S("result")))}, UNARY,
                                 {"self": "sigmoid_backward(grad, result)"},
                                 {"result": "σ(self): its slope is σ · (1 − σ)"}),
        "TanhBackward0": Rule("tanh", {0: G * (1 - S("result") ** 2)}, UNARY, {"self": "tanh_backward(grad, result)"},
                              {"result": "tanh(self): its slope is 1 − tanh²"}),
        "SoftmaxBackward0": Rule("_softmax", {0: S("result") * (G - sum_keep(G * S("result"), A("dim")))},
                                 UNARY, {"self": "_softmax_backward_data(grad, result, dim, self.scalar_type())"},
                                 {"result": "the probabilities p: the gradient is p · (g − Σ g·p)"}),
        "LogSoftmaxBackward0": Rule("_log_softmax", {0: G - exp(S("result")) * sum_keep(G, A("dim"))}, UNARY,
                                    {"self": "_log_softmax_backward_data(grad, result, dim, self.scalar_type())"},
                                    {"result": "the log-probabilities: exp(result) gives the probabilities back"}),
        "NativeDropoutBackward0": Rule("native_dropout", {0: G * S("result1") * const(
            "scale", lambda p: f"1/(1 − {p})", m.dropout_scale, A("p"))}, ("input",), {
            "input": "GradMode::is_enabled() ? infinitely_differentiable_native_dropout_backward(grad, result1, "
                     "(!train.has_value() || !train.value() ? 1 : (p == 1 ? 0.0 : 1.0 / (1.0 - p)))) : "
                     "native_dropout_backward(grad, result1, (!train.has_value() || !train.value() ? 1 : "
                     "(p == 1 ? 0.0 : 1.0 / (1.0 - p))))"},
            {"result1": "the mask of kept elements"}),
    }


def _norms() -> dict[str, Rule]:
    ln = "grad.defined() ? native_layer_norm_backward_symint(grad, input, normalized_shape, result1, result2, " \
         "weight, bias, grad_input_mask) : std::tuple<Tensor, Tensor, Tensor>()"
    bn = "grad.defined() ? native_batch_norm_backward(grad, input, weight, running_mean, running_var, result1, " \
         "result2, training, eps, grad_input_mask) : std::tuple<Tensor, Tensor, Tensor>()"
    xhat = "x̂ = ({x} − {m}) · {r}"
    norm_in = "({g}·{w} − mean({g}·{w}) − x̂ · mean({g}·{w}·x̂)) · {r}, " + xhat
    n = A("normalized_shape")
    return {
        "NativeLayerNormBackward0": Rule("native_layer_norm", {
            0: fn("layer_norm_input", lambda g, x, mu, r, w, s: norm_in.format(g=g, w=w, x=x, m=mu, r=r)
                  + f", means over the last {s} dims", m.layer_norm_input,
                  G, S("input"), S("result1"), S("result2"), S("weight"), n),
            1: fn("layer_norm_weight", lambda g, x, mu, r, s: f"Σ over rows of {g} · x̂, " + xhat.format(x=x, m=mu, r=r),
                  m.layer_norm_weight, G, S("input"), S("result1"), S("result2"), n),
            2: fn("layer_norm_bias", lambda g, s: f"Σ over rows of {g}", m.layer_norm_bias, G, n)},
            ("input", "weight", "bias"), {"input, weight, bias": ln},
            {"input": "x, to normalize again (x̂)", "result1": "each row's mean", "result2": "each row's 1/std (rstd)",
             "weight": "the scale, in the input's gradient", "bias": "its shape only"}),
        "NativeBatchNormBackward0": Rule("native_batch_norm", {
            0: fn("batch_norm_input", lambda g, x, w, mu, r: norm_in.format(g=g, w=w, x=x, m=mu, r=r)
                  + ", means over the batch and positions of each channel", m.batch_norm_input,
                  G, S("input"), S("weight"), S("result1"), S("result2")),
            1: fn("batch_norm_weight", lambda g, x, mu, r: f"Σ per channel of {g} · x̂, " + xhat.format(x=x, m=mu, r=r),
                  m.batch_norm_weight, G, S("input"), S("result1"), S("result2")),
            2: fn("batch_norm_bias", lambda g: f"Σ per channel of {g}", m.batch_norm_bias, G)},
            ("input", "weight", "bias"), {"input, weight, bias": bn},
            {"input": "x, to normalize again (x̂)", "result1": "each channel's batch mean",
             "result2": "each channel's 1/std (invstd)", "weight": "the scale, in the input's gradient",
             "running_mean": "not used in training mode", "running_var": "not used in training mode"},
            when=lambda a: bool(a.get("training"))),
    }


def _lookups() -> dict[str, Rule]:
    return {
        "EmbeddingBackward0": Rule("embedding", {0: fn(
            "embedding_back", lambda g, i, n, p: f"rows of {g} added into row i of a {n}-row zero table, i from {i}",
            m.embedding_back, G, S("indices"), A("weight_sym_argsize_0"), A("padding_idx"))}, ("weight",), {
            "weight": "embedding_backward_symint(grad, indices, weight.sym_size(0), padding_idx, "
                      "scale_grad_by_freq, sparse)"},
            {"indices": "which row of the table each gradient row goes to"},
            when=lambda a: not a.get("scale_grad_by_freq") and not a.get("sparse")),
        "NllLossBackward0": Rule("nll_loss_forward", {0: fn(
            "nll_back", lambda g, x, t, w, tw, red, ii: f"−{g} at each row's class in {t}, 0 elsewhere"
            + (f", divided by {tw}" if red == "1" else ""),
            m.nll_back, G, S("self"), S("target"), S("weight"), S("total_weight"), A("reduction"), A("ignore_index"))},
            ("self",), {"self": "nll_loss_backward_symint(grad, self, target, weight, reduction, ignore_index, "
                                "total_weight)"},
            {"target": "which class of each row gets the gradient", "total_weight": "the divisor of a mean",
             "self": "its shape only", "weight": "class weights (none: all 1)"}),
        "MseLossBackward0": (_mse(True), _mse(False)),
    }


def _mse(mean: bool) -> Rule:
    numel = fn("numel", lambda a: f"numel({a})", lambda a: float(a.size), S("self"))
    diff = {0: S("self") - S("target"), 1: S("target") - S("self")}
    grads = {i: (G * (2 * d / numel) if mean else G * (2 * d)) for i, d in diff.items()}
    return Rule("mse_loss", grads, ("self", "target"), {
        "self": "mse_loss_backward(grad, self, target, reduction)",
        "target": "mse_loss_backward(grad, target, self, reduction)"},
        {"self": "the prediction, in the difference self − target", "target": "the target, in that difference"},
        when=lambda a: (a.get("reduction") == m.MEAN) == mean)


def _views() -> dict[str, Rule]:
    back = {"self": "grad.reshape_symint(self.sym_sizes())"}
    return {
        "ViewBackward0": Rule("view", {0: reshape(G, SIZES)}, UNARY, back),
        "UnsafeViewBackward0": Rule("_unsafe_view", {0: reshape(G, SIZES)}, UNARY, back),
        "TBackward0": Rule("t", {0: G.T}, UNARY, {"self": "grad.t()"}),
        "TransposeBackward0": Rule("transpose.int", {0: fn(
            "swap", lambda g, a, b: f"transpose({g}, {a}, {b})", m.swap, G, A("dim0"), A("dim1"))}, UNARY,
            {"self": "grad.transpose(dim0, dim1)"}),
        "PermuteBackward0": Rule("permute", {0: fn(
            "unpermute", lambda g, d: f"permute({g}, inverse of {d})", m.unpermute, G, A("dims"))}, UNARY,
            {"self": "permute_backwards(grad, dims)"}),
        "ExpandBackward0": Rule("expand", {0: sum_to(G, SIZES)}, UNARY, {"self": "at::sum_to(grad, self.sym_sizes())"}),
        "UnsqueezeBackward0": Rule("unsqueeze", {0: fn(
            "squeeze", lambda g, d: f"squeeze({g}, dim {d})", m.squeeze, G, A("dim"))}, UNARY,
            {"self": "grad.squeeze(dim)"}),
        "SqueezeBackward0": Rule("squeeze", {0: reshape(G, SIZES)}, UNARY, {"self": "unsqueeze_to(grad, self.sym_sizes())"}),
        "SqueezeBackward1": Rule("squeeze.dim", {0: reshape(G, SIZES)}, UNARY,
                                 {"self": "unsqueeze_to(grad, dim, self.sym_sizes())"}),
        "SqueezeBackward2": Rule("squeeze.dims", {0: reshape(G, SIZES)}, UNARY,
                                 {"self": "unsqueeze_to(grad, dim, self.sym_sizes())"}),
        "CloneBackward0": Rule("clone", {0: G}, UNARY, {"self": "grad"}),
        "SelectBackward0": Rule("select.int", {0: fn(
            "select_back", lambda g, s, d, i: f"{g} placed at index {i} of dim {d} in zeros{s}", m.select_back,
            G, SIZES, A("dim"), A("index"))}, UNARY, {"self": "select_backward_symint(grad, self.sym_sizes(), dim, index)"}),
        "SliceBackward0": Rule("slice.Tensor", {0: fn(
            "slice_back", lambda g, s, d, a, b, k: f"{g} placed at [{a}:{b}:{k}] of dim {d} in zeros{s}", m.slice_back,
            G, SIZES, A("dim"), A("start"), A("end"), A("step"))}, UNARY,
            {"self": "slice_backward_wrapper(grad, self.sym_sizes(), dim, start, end, step)"}),
    }


def _conv_attention() -> dict[str, Rule]:
    conv = "grad.defined() ? convolution_backward_symint(grad, input, weight, bias->sym_sizes(), stride, padding, " \
           "dilation, transposed, output_padding, groups, grad_input_mask) : std::tuple<Tensor, Tensor, Tensor>()"
    geo = (A("stride"), A("padding"), A("dilation"))
    sdpa = "_scaled_dot_product_flash_attention_for_cpu_backward(grad, query, key, value, output, logsumexp, " \
           "dropout_p, is_causal, attn_mask, scale)"
    att = (G, S("query"), S("key"), S("value"), S("output"), S("logsumexp"), A("is_causal"), A("scale"))
    p = "P = softmax({q} · {k}ᵀ · scale) (from {lse}), dS = P · ({g} · {v}ᵀ − Σ({g} · {o}))"
    ptext = lambda g, q, k, v, o, lse, c, s: p.format(q=q, k=k, v=v, g=g, o=o, lse=lse)  # noqa: E731
    return {
        "ConvolutionBackward0": Rule("convolution", {
            0: fn("conv_input", lambda g, x, w, *_: f"conv_transpose({g}, {w})", m.conv_input, G, S("input"), S("weight"), *geo),
            1: fn("conv_weight", lambda g, x, w, *_: f"conv({x}, {g}) (each weight tap times the input it touched)",
                  m.conv_weight, G, S("input"), S("weight"), *geo),
            2: fn("conv_bias", lambda g: f"Σ of {g} over batch and positions", m.conv_bias, G)},
            ("input", "weight", "bias"), {"input, weight, bias": conv},
            {"input": "the input, in the weight's gradient", "weight": "the kernel, in the input's gradient"},
            when=lambda a: not a.get("transposed") and a.get("groups") == 1 and len(a.get("stride") or []) <= 2),
        "ScaledDotProductFlashAttentionForCpuBackward0": Rule("_scaled_dot_product_flash_attention_for_cpu", {
            0: fn("attention_query", lambda *t: f"dS · {t[2]} · scale, " + ptext(*t), m.attention_query, *att),
            1: fn("attention_key", lambda *t: f"dSᵀ · {t[1]} · scale, " + ptext(*t), m.attention_key, *att),
            2: fn("attention_value", lambda *t: f"Pᵀ · {t[0]}, " + ptext(*t), m.attention_value, *att)},
            ("query", "key", "value"), {"query, key, value": sdpa},
            {"query": "scores and the key's gradient", "key": "scores and the query's gradient",
             "value": "the query's and key's gradients", "output": "Σ g·output in the softmax's gradient",
             "logsumexp": "the softmax normalizer, to rebuild P without storing it"},
            when=lambda a: not a.get("dropout_p")),
    }


RULES: dict[str, Rule | tuple[Rule, ...]] = {**_elementwise(), **_products(), **_reductions(), **_activations(), **_norms(),
                          **_lookups(), **_views(), **_conv_attention()}

ACCUMULATE = "AccumulateGrad"   # no derivative: it stores the gradient that arrives as the leaf's .grad


def rule_for(name: str, attrs: dict) -> Rule | None:
    """The rule on file for a node, if its saved values fit it (gelu's approximate, ...)."""
    found = RULES.get(name, ())
    for rule in found if isinstance(found, tuple) else (found,):
        if rule.when(attrs or {}):
            return rule
    return None
