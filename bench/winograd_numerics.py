#!/usr/bin/env python3
"""The error of a 3x3 convolution through Winograd F(2x2, 3x3) in FP16 against direct FP16, both with FP32
accumulation (needs numpy: Debian's python3-numpy). SD-like operands: a [32, 32, 320] input of SiLU(N(0, 1)) (a
GroupNorm + SiLU output), 320 -> 320 weights of N(0, 1 / (9 x 320)). Winograd: U = G g G^T and V = B^T d B
rounded to FP16 (the transformed weights and inputs an FP16 kernel would multiply), M = sum over channels of
U V in FP32, Y = A^T M A, the output rounded to FP16; also with M stored in FP16 (an unfused kernel).
  python3 bench/winograd_numerics.py
"""
import numpy as np

rng = np.random.default_rng(0)
H = W = 32
CIN = COUT = 320
x = rng.standard_normal((H, W, CIN))
x = x / (1 + np.exp(-x))
w = rng.standard_normal((3, 3, CIN, COUT)) / np.sqrt(9 * CIN)


def f16(a):
    return a.astype(np.float16).astype(np.float64)


xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))


def direct(xp, w, acc):
    out = np.zeros((H, W, COUT), acc)
    for r in range(3):
        for s in range(3):
            out += (xp[r:r + H, s:s + W, :].astype(acc).reshape(-1, CIN) @ w[r, s].astype(acc)).reshape(H, W, COUT)
    return out.astype(np.float64)


BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], float)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)


def winograd(xp, w, round_vu, round_m):
    u = round_vu(np.einsum('ir,rsco,js->ijco', G, w, G))  # [4, 4, Cin, Cout]
    d = np.stack([np.stack([xp[2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4, :] for tx in range(W // 2)]) for ty in range(H // 2)])
    v = round_vu(np.einsum('ia,yxabc,jb->yxijc', BT, d, BT))
    m = round_m(np.einsum('yxijc,ijco->yxijo', v.astype(np.float32), u.astype(np.float32)).astype(np.float64))
    y = np.einsum('ai,yxijo,bj->yxabo', AT, m, AT)
    return y.transpose(0, 2, 1, 3, 4).reshape(H, W, COUT)


ref = direct(xp, w, np.float64)


def report(name, y):
    e = y - ref
    print('%-52s nmse %.3e  max abs %.3e' % (name, (e ** 2).mean() / (ref ** 2).mean(), abs(e).max()))


def same(a):
    return a


def winograd_x(xp, w, round_vu):
    """F(2, 3) along x only: for each filter row, 4 transformed columns per pair of output columns (a 1.5x
    cut in multiplies, 4 accumulators per 2 outputs), the sum over filter rows and channels in the GEMM."""
    u = round_vu(np.einsum('is,rsco->irco', G, w))  # [4, 3, Cin, Cout]
    y = np.zeros((H, W // 2, 2, COUT))
    for r in range(3):
        d = np.stack([xp[r:r + H, 2 * tx:2 * tx + 4, :] for tx in range(W // 2)], 1)  # [H, W/2, 4, Cin]
        v = round_vu(np.einsum('ia,hxac->hxic', BT, d))
        m = np.einsum('hxic,ico->hxio', v.astype(np.float32), u[:, r].astype(np.float32)).astype(np.float64)
        y += np.einsum('ai,hxio->hxao', AT, m)
    return y.reshape(H, W, COUT)


report('direct: FP16 operands, FP32 sums, FP16 output', f16(direct(f16(xp), f16(w), np.float32)))
report('Winograd F(2x2,3x3): V, U in FP16, M in FP32', f16(winograd(f16(xp), w, f16, same)))
report('Winograd F(2x2,3x3): V, U in FP16, M in FP16', f16(winograd(f16(xp), w, f16, f16)))
report('Winograd F(2,3) along x: V, U in FP16, M in FP32', f16(winograd_x(f16(xp), w, f16)))
