#!/usr/bin/env python3
"""Derives the coefficients of src/backends/cuda/gelu_poly.h and checks them (pure Python, no packages).

GELU(x) = x Phi(x), Phi(-a) = 0.5 erfc(a / sqrt 2) = 2^(Q(a) - a^2 / (2 ln 2)), Q(a) = log2(0.5 erfcx(a / sqrt 2)).
Q is interpolated at N Chebyshev nodes on [0, A] with a polynomial of degree D in t = 2 a / A - 1, rewritten as
monomials in t and rounded to FP32. The check models the kernel's float arithmetic (every operation rounded to
FP32, fmaf as one rounding; 2^x exact, where the GPU's ex2.approx adds about 2^-22 relative) against erf-GELU in
double over [-12, 12] in steps of 5e-5, and counts the FP16 results that differ from the exactly rounded GELU.
  python3 bench/gelu_poly_fit.py [D] [A]
"""
import math
import struct
import sys

D = int(sys.argv[1]) if len(sys.argv) > 1 else 8
A = float(sys.argv[2]) if len(sys.argv) > 2 else 5.5
N = 200


def f32(x):
    return struct.unpack('f', struct.pack('f', x))[0]


def f16(x):
    return struct.unpack('e', struct.pack('e', x))[0]


def fmaf(a, b, c):  # one rounding (the product of two floats is exact in double)
    return f32(a * b + c)


C = 0.5 / math.log(2)


def q_exact(a):
    return math.log2(0.5 * math.erfc(a / math.sqrt(2))) + a * a * C


def fit():
    nodes = [math.cos(math.pi * (j + 0.5) / N) for j in range(N)]
    vals = [q_exact((x + 1) * A / 2) for x in nodes]
    cheb = [2 * sum(v * math.cos(k * math.pi * (j + 0.5) / N) for j, v in enumerate(vals)) / N for k in range(D + 1)]
    cheb[0] /= 2
    T = [[1.0], [0.0, 1.0]]
    for k in range(2, D + 1):
        a_ = [0.0] + [2 * v for v in T[k - 1]]
        b_ = T[k - 2] + [0.0] * (len(a_) - len(T[k - 2]))
        T.append([x - y for x, y in zip(a_, b_)])
    mono = [0.0] * (D + 1)
    for k in range(D + 1):
        for i, v in enumerate(T[k]):
            mono[i] += cheb[k] * v
    return [f32(m) for m in mono]


def gelu_model(v, mono, scale):
    t = fmaf(min(abs(v), A), scale, -1.0)
    q = mono[-1]
    for m in reversed(mono[:-1]):
        q = fmaf(q, t, m)
    h = f32(2.0 ** fmaf(f32(v * v), -f32(C), q))
    return f32(v * (f32(1.0 - h) if v >= 0 else h))


def main():
    mono = fit()
    scale = f32(2 / A)
    print(f"degree {D} on [0, {A}]: t = fmaf(min(|x|, {A}), {scale:.9g}f, -1); coefficients, t^{D} first:")
    print(", ".join(f"{m:.9e}f" for m in reversed(mono)))
    worst_rel = worst_abs = 0.0
    off = n = 0
    for i in range(-240000, 240001):
        v = f32(i / 20000.0)
        got, ref = gelu_model(v, mono, scale), v * 0.5 * math.erfc(-v / math.sqrt(2))
        worst_abs = max(worst_abs, abs(got - ref))
        if abs(v) <= A and ref != 0:
            worst_rel = max(worst_rel, abs(got - ref) / abs(ref))
        n += 1
        off += f16(got) != f16(ref)
    print(f"max relative error {worst_rel:.3e} (|x| <= {A}), max absolute {worst_abs:.3e}; FP16 results off the exactly rounded: {off} of {n}")


if __name__ == '__main__':
    main()
