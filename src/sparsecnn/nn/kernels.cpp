// Stride-1 convolution kernels of the k-step layer (sparsecnn.nn.native, speed: benchmarks/README.md, "Layers").
//
// Plain C ABI, no Python or torch headers: compiled on first use with the machine's C++
// compiler (-O3 -march=native -fopenmp) and loaded with ctypes.  OpenMP resolves to the
// libgomp.so.1 that torch has already loaded, so these loops share torch's thread pool.
//
// correlate: v[b,o,i,j] = sign * sum_{c,p,q} w[o,c,p,q] in_pad[b,c,i+p,j+q], finished by the
//   Epilogue below (bias, an added map, relu, scale, mask: one pass over the output)
//   in_pad is `in` with pad_h / pad_w zero rows / columns on each side; the output has
//   (H + 2 pad_h - kh + 1) x (W + 2 pad_w - kw + 1) positions.  conv2d is correlate with
//   padding p; conv_transpose2d (stride 1) is correlate with padding k - 1 - p and the
//   weights flipped and transposed.
// weight_gradient: dw[o,c,p,q] += alpha * sum_{b,i,j} m[b,o,i,j] in_pad[b,c,i+p,j+q]
//   and dbias[o] += alpha_bias * sum_{b,i,j} m[b,o,i,j].
//
// Each signal is copied into a zero-padded per-thread scratch whose rows are long enough for
// whole vector segments, so the inner loops have no bounds tests; a tile of TILE output
// channels x one segment (2 vectors) of a row is accumulated in registers over all taps.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <omp.h>

namespace {

constexpr int VECTOR_BYTES =
#if defined(__AVX512F__)
    64;
#elif defined(__AVX__)
    32;
#else
    16;
#endif
constexpr int TILE = 8;        // output channels per register tile of correlate
constexpr int GRADIENT_TILE = 4;  // ... and of weight_gradient (3 taps x 4 channels)
constexpr int VECTORS = 2;     // vectors per row segment
constexpr int MAX_ROWS = 4;    // output rows per register tile (few output channels)

// rows of a register tile: as many as keep ~24 accumulators for N output channels
template <int N> constexpr int tile_rows() { return N >= 8 ? 1 : (N >= 4 ? 2 : MAX_ROWS); }

template <typename T> struct Vec {
    typedef T type __attribute__((vector_size(VECTOR_BYTES)));
    static constexpr int lanes = VECTOR_BYTES / sizeof(T);
};

template <typename T> inline typename Vec<T>::type load(const T *p) {
    typename Vec<T>::type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <typename T> inline void store(T *p, typename Vec<T>::type v) {
    std::memcpy(p, &v, sizeof(v));
}

struct Geometry {
    int batch, in_channels, height, width, out_channels, kernel_h, kernel_w, pad_h, pad_w;
    int out_h() const { return height + 2 * pad_h - kernel_h + 1; }
    int out_w() const { return width + 2 * pad_w - kernel_w + 1; }
};

// zero-padded copy of one signal: rows of `row_len` >= width + 2 pad_w (the slack columns
// are zeros too); only the border is cleared, the interior is overwritten
template <typename T>
void pad_signal(const T *in, const Geometry &g, int row_len, int rows, T *scratch) {
    const int right = row_len - g.pad_w - g.width;
    for (int c = 0; c < g.in_channels; c++) {
        T *plane = scratch + (size_t)c * rows * row_len;
        std::memset(plane, 0, sizeof(T) * (size_t)g.pad_h * row_len);
        const int below = rows - g.pad_h - g.height;
        std::memset(plane + (size_t)(g.pad_h + g.height) * row_len, 0,
                    sizeof(T) * (size_t)below * row_len);
        for (int i = 0; i < g.height; i++) {
            T *row = plane + (size_t)(i + g.pad_h) * row_len;
            std::memset(row, 0, sizeof(T) * g.pad_w);
            std::memcpy(row + g.pad_w, in + ((size_t)c * g.height + i) * g.width,
                        sizeof(T) * g.width);
            std::memset(row + g.pad_w + g.width, 0, sizeof(T) * right);
        }
    }
}

template <typename T> struct Layout {
    int segment, segments, row_len, rows;
    explicit Layout(const Geometry &g) {
        segment = VECTORS * Vec<T>::lanes;
        segments = (g.out_w() + segment - 1) / segment;
        row_len = segments * segment + g.kernel_w - 1;
        if (row_len < g.width + 2 * g.pad_w) row_len = g.width + 2 * g.pad_w;
        rows = g.height + 2 * g.pad_h + MAX_ROWS - 1;  // zero rows below for row tiles
    }
    size_t scratch() const { return (size_t)rows * row_len; }
};

// What happens to a correlation value v at output (b, o, i, j), A = addend[b, o, i, j]:
//   pre  = v + bias[o] + inside * A + inside_relu * relu(A)
//   out  = outside * A + (mask[b, o, i, j] != 0 ? signal_scale[b] * scale[o] * relu?(pre)
//                                                 + extra[b, o, i, j] : 0)
//   rectified[b, o, i, j] = relu(pre),   side[b, o, i, j] = side_scale[b] * pre
// (null pointers: no bias / addend / scale / mask / rectified copy / restart sums)
template <typename T> struct Epilogue {
    const T *bias;
    const T *addend;
    T inside, inside_relu, outside;
    int relu;
    const T *scale;
    const T *mask;
    T *rectified;
    // FISTA's restart test: with `previous` = a^{t-1} (and the addend y^{t-1}), each task
    // adds sum (A - out)(out - previous) over its outputs to dots[signal * blocks + block]
    const T *previous;
    T *dots;
    // FISTA's backward through y = (1 + beta) a - beta a_prev, per signal n:
    //   out is multiplied by signal_scale[n] and `extra` is added, before the mask;
    //   side[b, o, i, j] = side_scale[n] * pre
    const T *signal_scale;
    const T *extra;
    T *side;
    const T *side_scale;
};

// the maps one output vector reads and writes (null: not used)
template <typename T> struct Streams {
    const T *addend, *mask, *extra;
    T *out, *rectified, *side;
};

// torch.relu: max(v, 0) with NaN kept (NaN < 0 is false).  `v > 0 ? v : 0` would map NaN to
// 0 and hide a bad input that the PyTorch path reports; both forms are one max instruction.
template <typename T> inline typename Vec<T>::type relu(typename Vec<T>::type v) {
    return v < T(0) ? typename Vec<T>::type{} : v;
}

template <typename T>
inline void finish(typename Vec<T>::type v, const Epilogue<T> &e, int o, int n,
                   const Streams<T> &m) {
    typedef typename Vec<T>::type V;
    V a = V{};
    if (e.bias) v += e.bias[o];
    if (m.addend) {
        a = load<T>(m.addend);
        if (e.inside != T(0)) v += e.inside * a;
        if (e.inside_relu != T(0)) v += e.inside_relu * relu<T>(a);
    }
    if (m.rectified) store<T>(m.rectified, relu<T>(v));
    if (m.side) store<T>(m.side, e.side_scale[n] * v);
    if (e.relu) v = relu<T>(v);
    if (e.scale) v *= e.scale[o];
    if (e.signal_scale) v *= e.signal_scale[n];
    if (m.extra) v += load<T>(m.extra);
    if (m.mask) {
        const V k = load<T>(m.mask);
        v = k != T(0) ? v : V{};
    }
    if (m.addend && e.outside != T(0)) v += e.outside * a;
    store<T>(m.out, v);
}

template <typename T, int N>
void correlate_tile(const T *scratch, const Layout<T> &lay, const Geometry &g, const T *w,
                    int o0, T sign, const Epilogue<T> &e, int n, size_t base, T *out,
                    T *dot) {
    typedef typename Vec<T>::type V;
    constexpr int L = Vec<T>::lanes;
    constexpr int R = tile_rows<N>();
    const int taps = g.in_channels * g.kernel_h * g.kernel_w;
    const int oh = g.out_h(), ow = g.out_w();
    // weights of the tile, tap-major: one broadcast per (tap, channel), shared by R rows
    T *wt = static_cast<T *>(std::malloc(sizeof(T) * (size_t)taps * N));
    for (int t = 0; t < taps; t++)
        for (int u = 0; u < N; u++) wt[t * N + u] = sign * w[(size_t)(o0 + u) * taps + t];
    // a partial segment goes through zero-filled copies of its inputs and outputs
    T tail[6][VECTORS * L];
    V direction = V{};
    T direction_tail = 0;
    for (int i0 = 0; i0 < oh; i0 += R) {
        for (int s = 0; s < lay.segments; s++) {
            const int j0 = s * lay.segment;
            V acc[R][N][VECTORS];
            for (int r = 0; r < R; r++)
                for (int u = 0; u < N; u++)
                    for (int h = 0; h < VECTORS; h++) acc[r][u][h] = V{};
            int t = 0;
            for (int c = 0; c < g.in_channels; c++)
                for (int p = 0; p < g.kernel_h; p++) {
                    // rows past the output read the scratch's zero rows below
                    const T *row = scratch + ((size_t)c * lay.rows + i0 + p) * lay.row_len + j0;
                    for (int q = 0; q < g.kernel_w; q++, t++) {
                        const T *wk = wt + t * N;
                        for (int r = 0; r < R; r++) {
                            V x[VECTORS];
                            for (int h = 0; h < VECTORS; h++)
                                x[h] = load<T>(row + (size_t)r * lay.row_len + q + h * L);
                            for (int u = 0; u < N; u++)
                                for (int h = 0; h < VECTORS; h++) acc[r][u][h] += wk[u] * x[h];
                        }
                    }
                }
            const int valid = ow - j0 < lay.segment ? ow - j0 : lay.segment;
            for (int r = 0; r < R && i0 + r < oh; r++)
                for (int u = 0; u < N; u++) {
                    const size_t offset = base + ((size_t)(o0 + u) * oh + i0 + r) * ow + j0;
                    Streams<T> m{e.addend ? e.addend + offset : nullptr,
                                 e.mask ? e.mask + offset : nullptr,
                                 e.extra ? e.extra + offset : nullptr, out + offset,
                                 e.rectified ? e.rectified + offset : nullptr,
                                 e.side ? e.side + offset : nullptr};
                    const bool partial = valid < lay.segment;
                    if (partial) {
                        const T **inputs[3] = {&m.addend, &m.mask, &m.extra};
                        for (int k = 0; k < 3; k++)
                            if (*inputs[k]) {
                                std::memset(tail[k], 0, sizeof(tail[k]));
                                std::memcpy(tail[k], *inputs[k], sizeof(T) * valid);
                                *inputs[k] = tail[k];
                            }
                        m.out = tail[3];
                        if (m.rectified) m.rectified = tail[4];
                        if (m.side) m.side = tail[5];
                    }
                    for (int h = 0; h < VECTORS; h++)
                        finish<T>(acc[r][u][h], e, o0 + u, n,
                                  Streams<T>{m.addend ? m.addend + h * L : nullptr,
                                             m.mask ? m.mask + h * L : nullptr,
                                             m.extra ? m.extra + h * L : nullptr,
                                             m.out + h * L,
                                             m.rectified ? m.rectified + h * L : nullptr,
                                             m.side ? m.side + h * L : nullptr});
                    if (partial) {
                        std::memcpy(out + offset, tail[3], sizeof(T) * valid);
                        if (e.rectified)
                            std::memcpy(e.rectified + offset, tail[4], sizeof(T) * valid);
                        if (e.side) std::memcpy(e.side + offset, tail[5], sizeof(T) * valid);
                    }
                    if (e.previous) {  // the outputs are in L1: read them back
                        const T *a = e.addend + offset, *o = out + offset,
                                *p = e.previous + offset;
                        if (valid == lay.segment) {
                            for (int h = 0; h < VECTORS; h++) {
                                const V ov = load<T>(o + h * L);
                                direction += (load<T>(a + h * L) - ov) *
                                             (ov - load<T>(p + h * L));
                            }
                        } else {
                            for (int j = 0; j < valid; j++)
                                direction_tail += (a[j] - o[j]) * (o[j] - p[j]);
                        }
                    }
                }
        }
    }
    if (e.previous) {
        for (int l = 0; l < L; l++) direction_tail += direction[l];
        *dot += direction_tail;
    }
    std::free(wt);
}

template <typename T, int N>
void correlate_remainder(const T *scratch, const Layout<T> &lay, const Geometry &g,
                         const T *w, int o0, int n, T sign, const Epilogue<T> &e, int signal,
                         size_t base, T *out, T *dot) {
    if constexpr (N > 0) {
        if (n == N)
            return correlate_tile<T, N>(scratch, lay, g, w, o0, sign, e, signal, base, out,
                                        dot);
        correlate_remainder<T, N - 1>(scratch, lay, g, w, o0, n, sign, e, signal, base, out,
                                      dot);
    }
}

// one block of TILE output channels of signal b
template <typename T>
void correlate_block(const T *scratch, const Layout<T> &lay, const Geometry &g, const T *w,
                     T sign, const Epilogue<T> &e, int b, int block, T *out) {
    const int blocks = (g.out_channels + TILE - 1) / TILE;
    const int o0 = block * TILE;
    const int n = g.out_channels - o0 < TILE ? g.out_channels - o0 : TILE;
    const size_t out_size = (size_t)g.out_channels * g.out_h() * g.out_w();
    correlate_remainder<T, TILE>(scratch, lay, g, w, o0, n, sign, e, b, b * out_size, out,
                                 e.dots ? e.dots + b * blocks + block : nullptr);
}

template <typename T>
int correlate(const T *in, const T *w, T sign, const Epilogue<T> &e, T *out, Geometry g) {
    if (g.out_h() < 1 || g.out_w() < 1) return 1;
    const Layout<T> lay(g);
    const int blocks = (g.out_channels + TILE - 1) / TILE;
    const size_t in_size = (size_t)g.in_channels * g.height * g.width;
    int failed = 0;
#pragma omp parallel
    {
        T *scratch = static_cast<T *>(
            std::malloc(sizeof(T) * ((size_t)g.in_channels * lay.scratch() + lay.segment)));
        int padded = -1;
        if (!scratch) {
#pragma omp atomic write
            failed = 2;
        }
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < g.batch; b++)
            for (int block = 0; block < blocks; block++) {
                if (!scratch) continue;
                if (padded != b) {
                    pad_signal<T>(in + b * in_size, g, lay.row_len, lay.rows, scratch);
                    padded = b;
                }
                correlate_block<T>(scratch, lay, g, w, sign, e, b, block, out);
            }
        std::free(scratch);
    }
    return failed;
}

// Shifted copies of one padded signal for weight_gradient: shifted[c][q][i][j] =
// in_pad[c][i][j + q] for i < H + 2 pad_h, j < out_w.  The row length is out_w, the m plane's,
// so the positions of tap (p, q) are m's flat positions moved by p * out_w: every tap is one
// long dot product over the plane.
template <typename T> void shift_signal(const T *in, const Geometry &g, T *shifted) {
    const int rows = g.height + 2 * g.pad_h, ow = g.out_w();
    for (int c = 0; c < g.in_channels; c++)
        for (int q = 0; q < g.kernel_w; q++)
            for (int i = 0; i < rows; i++) {
                T *out = shifted + (((size_t)c * g.kernel_w + q) * rows + i) * ow;
                const int source_row = i - g.pad_h;
                if (source_row < 0 || source_row >= g.height) {
                    std::memset(out, 0, sizeof(T) * ow);
                    continue;
                }
                const T *row = in + ((size_t)c * g.height + source_row) * g.width;
                for (int j = 0; j < ow; j++) {
                    const int column = j + q - g.pad_w;
                    out[j] = column >= 0 && column < g.width ? row[column] : T(0);
                }
            }
}

template <typename T> size_t shifted_size(const Geometry &g) {
    return (size_t)g.in_channels * g.kernel_w * (g.height + 2 * g.pad_h) * g.out_w();
}

// NP taps (c, p0 .. p0 + NP - 1, q) for N output channels: per vector of positions, N loads
// of m and NP of the shifted signal feed NP x N accumulators held in registers
template <typename T, int N, int NP, bool BIAS>
void gradient_taps(const T *m, const T *shifted, const Geometry &g, int o0, int c, int p0,
                   int q, T alpha, T *dw, T alpha_bias, T *dbias) {
    typedef typename Vec<T>::type V;
    constexpr int L = Vec<T>::lanes;
    const int ow = g.out_w();
    const size_t plane = (size_t)g.out_h() * ow;
    const size_t vectors = plane / L;
    const int rows = g.height + 2 * g.pad_h;
    const int taps = g.in_channels * g.kernel_h * g.kernel_w;
    const T *base = shifted + (((size_t)c * g.kernel_w + q) * rows + p0) * ow;
    V acc[NP][N], sums[BIAS ? N : 1];
    for (int d = 0; d < NP; d++)
        for (int u = 0; u < N; u++) acc[d][u] = V{};
    for (int u = 0; u < (BIAS ? N : 1); u++) sums[u] = V{};
    for (size_t v = 0; v < vectors; v++) {
        V mv[N], r[NP];
        for (int u = 0; u < N; u++) mv[u] = load<T>(m + (o0 + u) * plane + v * L);
        for (int d = 0; d < NP; d++) r[d] = load<T>(base + d * ow + v * L);
        for (int d = 0; d < NP; d++)
            for (int u = 0; u < N; u++) acc[d][u] += mv[u] * r[d];
        if constexpr (BIAS)
            for (int u = 0; u < N; u++) sums[u] += mv[u];
    }
    if constexpr (BIAS)
        for (int u = 0; u < N; u++) {
            T total = 0;
            for (size_t e = vectors * L; e < plane; e++) total += m[(o0 + u) * plane + e];
            for (int l = 0; l < L; l++) total += sums[u][l];
            dbias[o0 + u] += alpha_bias * total;
        }
    for (int d = 0; d < NP; d++)
        for (int u = 0; u < N; u++) {
            T total = 0;
            for (size_t e = vectors * L; e < plane; e++)
                total += m[(o0 + u) * plane + e] * base[d * ow + e];
            for (int l = 0; l < L; l++) total += acc[d][u][l];
            dw[(size_t)(o0 + u) * taps + ((size_t)c * g.kernel_h + p0 + d) * g.kernel_w + q] +=
                alpha * total;
        }
}

template <typename T, int N, int NP>
void gradient_group(const T *m, const T *shifted, const Geometry &g, int o0, int c, int p0,
                    int q, T alpha, T *dw, T alpha_bias, T *dbias) {
    // the bias sum rides on the first group's loads of m
    if (dbias && c == 0 && p0 == 0 && q == 0)
        gradient_taps<T, N, NP, true>(m, shifted, g, o0, c, p0, q, alpha, dw, alpha_bias,
                                      dbias);
    else
        gradient_taps<T, N, NP, false>(m, shifted, g, o0, c, p0, q, alpha, dw, alpha_bias,
                                       dbias);
}

template <typename T, int N>
void gradient_tile(const T *m, const T *shifted, const Geometry &g, int o0, T alpha, T *dw,
                   T alpha_bias, T *dbias) {
    for (int c = 0; c < g.in_channels; c++)
        for (int q = 0; q < g.kernel_w; q++)
            for (int p0 = 0; p0 < g.kernel_h; p0 += 3) {
                const int np = g.kernel_h - p0 < 3 ? g.kernel_h - p0 : 3;
                if (np == 3)
                    gradient_group<T, N, 3>(m, shifted, g, o0, c, p0, q, alpha, dw,
                                            alpha_bias, dbias);
                else if (np == 2)
                    gradient_group<T, N, 2>(m, shifted, g, o0, c, p0, q, alpha, dw,
                                            alpha_bias, dbias);
                else
                    gradient_group<T, N, 1>(m, shifted, g, o0, c, p0, q, alpha, dw,
                                            alpha_bias, dbias);
            }
}

template <typename T, int N>
void gradient_remainder(const T *m, const T *shifted, const Geometry &g, int o0, int n,
                        T alpha, T *dw, T alpha_bias, T *dbias) {
    if constexpr (N > 0) {
        if (n == N) return gradient_tile<T, N>(m, shifted, g, o0, alpha, dw, alpha_bias, dbias);
        gradient_remainder<T, N - 1>(m, shifted, g, o0, n, alpha, dw, alpha_bias, dbias);
    }
}

// the blocks first, first + step, ... of GRADIENT_TILE output channels of one signal
template <typename T>
void gradient_signal(const T *m, const T *shifted, const Geometry &g, int first, int step,
                     T alpha, T *dw, T alpha_bias, T *dbias) {
    const int blocks = (g.out_channels + GRADIENT_TILE - 1) / GRADIENT_TILE;
    for (int block = first; block < blocks; block += step) {
        const int o0 = block * GRADIENT_TILE;
        const int n = g.out_channels - o0 < GRADIENT_TILE ? g.out_channels - o0 : GRADIENT_TILE;
        gradient_remainder<T, GRADIENT_TILE>(m, shifted, g, o0, n, alpha, dw, alpha_bias, dbias);
    }
}

// a thread's partial weight (and bias) gradient added to the totals
template <typename T>
void add_partial(const T *partial, size_t weights, int channels, T *dw, T *dbias) {
#pragma omp critical
    {
        for (size_t k = 0; k < weights; k++) dw[k] += partial[k];
        if (dbias)
            for (int o = 0; o < channels; o++) dbias[o] += partial[weights + o];
    }
}

template <typename T>
int weight_gradient(const T *m, const T *in, T alpha, T *dw, T alpha_bias, T *dbias,
                    Geometry g) {
    if (g.out_h() < 1 || g.out_w() < 1) return 1;
    const int blocks = (g.out_channels + GRADIENT_TILE - 1) / GRADIENT_TILE;
    const size_t in_size = (size_t)g.in_channels * g.height * g.width;
    const size_t m_size = (size_t)g.out_channels * g.out_h() * g.out_w();
    const int threads = omp_get_max_threads();
    // every thread owns whole output-channel blocks when there are enough of them (no
    // reduction); otherwise signals are split and the partial sums added at the end
    const bool by_block = blocks >= 2 * threads || g.batch < threads;
    const size_t weights = (size_t)g.out_channels * g.in_channels * g.kernel_h * g.kernel_w;
    const size_t partial_size = weights + (dbias ? g.out_channels : 0);
    int failed = 0;
#pragma omp parallel
    {
        T *shifted = static_cast<T *>(std::malloc(sizeof(T) * shifted_size<T>(g)));
        T *partial = by_block ? nullptr : static_cast<T *>(std::calloc(partial_size, sizeof(T)));
        if (!shifted || (!by_block && !partial)) {
#pragma omp atomic write
            failed = 2;
        }
        if (by_block) {
            // signals outer, blocks split: each thread shifts every signal once
            const int id = omp_get_thread_num(), count = omp_get_num_threads();
            for (int b = 0; b < g.batch && shifted; b++) {
                shift_signal<T>(in + b * in_size, g, shifted);
                gradient_signal<T>(m + b * m_size, shifted, g, id, count, alpha, dw,
                                   alpha_bias, dbias);
            }
        } else {
            T *partial_bias = dbias && partial ? partial + weights : nullptr;
#pragma omp for schedule(static)
            for (int b = 0; b < g.batch; b++) {
                if (!shifted || !partial) continue;
                shift_signal<T>(in + b * in_size, g, shifted);
                gradient_signal<T>(m + b * m_size, shifted, g, 0, 1, alpha, partial,
                                   alpha_bias, partial_bias);
            }
            if (partial) add_partial<T>(partial, weights, g.out_channels, dw, dbias);
            std::free(partial);
        }
        std::free(shifted);
    }
    return failed;
}

// The two halves of a backward step, signal by signal: the weight gradient
// dw += alpha * maps ⋆ pad(signals) (and dbias), then a correlation of `in` (geometry gc)
// with its epilogue.  A signal's maps are read by the first and, still in the core's cache,
// by the second (the synthesis of the same gradient, or the mask of the same codes); threads
// take whole signals and add their partial weight gradients at the end.
template <typename T>
int gradient_then_correlate(const T *maps, const T *signals, T alpha, T *dw, T alpha_bias,
                            T *dbias, Geometry gw, const T *in, const T *w, T sign,
                            const Epilogue<T> &e, T *out, Geometry gc) {
    if (gw.out_h() < 1 || gw.out_w() < 1 || gc.out_h() < 1 || gc.out_w() < 1) return 1;
    if (gw.batch != gc.batch) return 3;
    const int blocks = (gc.out_channels + TILE - 1) / TILE;
    const size_t signal_size = (size_t)gw.in_channels * gw.height * gw.width;
    const size_t map_size = (size_t)gw.out_channels * gw.out_h() * gw.out_w();
    const size_t in_size = (size_t)gc.in_channels * gc.height * gc.width;
    const size_t weights = (size_t)gw.out_channels * gw.in_channels * gw.kernel_h * gw.kernel_w;
    const size_t partial_size = weights + (dbias ? gw.out_channels : 0);
    const Layout<T> lay(gc);
    int failed = 0;
#pragma omp parallel
    {
        T *shifted = static_cast<T *>(std::malloc(sizeof(T) * shifted_size<T>(gw)));
        T *scratch = static_cast<T *>(
            std::malloc(sizeof(T) * ((size_t)gc.in_channels * lay.scratch() + lay.segment)));
        T *partial = static_cast<T *>(std::calloc(partial_size, sizeof(T)));
        const bool ready = shifted && scratch && partial;
        if (!ready) {
#pragma omp atomic write
            failed = 2;
        }
        T *partial_bias = dbias && partial ? partial + weights : nullptr;
#pragma omp for schedule(static)
        for (int b = 0; b < gw.batch; b++) {
            if (!ready) continue;
            shift_signal<T>(signals + b * signal_size, gw, shifted);
            gradient_signal<T>(maps + b * map_size, shifted, gw, 0, 1, alpha, partial,
                               alpha_bias, partial_bias);
            pad_signal<T>(in + b * in_size, gc, lay.row_len, lay.rows, scratch);
            for (int block = 0; block < blocks; block++)
                correlate_block<T>(scratch, lay, gc, w, sign, e, b, block, out);
        }
        if (ready) add_partial<T>(partial, weights, gw.out_channels, dw, dbias);
        std::free(partial);
        std::free(scratch);
        std::free(shifted);
    }
    return failed;
}

}  // namespace

extern "C" {

int sparsecnn_filter_tile() { return TILE; }

#define SPARSECNN_GEOMETRY int batch, int in_channels, int height, int width, int out_channels, \
    int kernel_h, int kernel_w, int pad_h, int pad_w
#define SPARSECNN_MAKE Geometry{batch, in_channels, height, width, out_channels, kernel_h, \
    kernel_w, pad_h, pad_w}

int sparsecnn_correlate_f32(const float *in, const float *w, float sign,
                            const Epilogue<float> *epilogue, float *out, SPARSECNN_GEOMETRY) {
    return correlate<float>(in, w, sign, *epilogue, out, SPARSECNN_MAKE);
}

int sparsecnn_correlate_f64(const double *in, const double *w, double sign,
                            const Epilogue<double> *epilogue, double *out, SPARSECNN_GEOMETRY) {
    return correlate<double>(in, w, sign, *epilogue, out, SPARSECNN_MAKE);
}

int sparsecnn_weight_gradient_f32(const float *m, const float *in, float alpha, float *dw,
                                  float alpha_bias, float *dbias, SPARSECNN_GEOMETRY) {
    return weight_gradient<float>(m, in, alpha, dw, alpha_bias, dbias, SPARSECNN_MAKE);
}

int sparsecnn_weight_gradient_f64(const double *m, const double *in, double alpha,
                                  double *dw, double alpha_bias, double *dbias,
                                  SPARSECNN_GEOMETRY) {
    return weight_gradient<double>(m, in, alpha, dw, alpha_bias, dbias, SPARSECNN_MAKE);
}

#define SPARSECNN_GEOMETRY_2 int batch_2, int in_channels_2, int height_2, int width_2, \
    int out_channels_2, int kernel_h_2, int kernel_w_2, int pad_h_2, int pad_w_2
#define SPARSECNN_MAKE_2 Geometry{batch_2, in_channels_2, height_2, width_2, out_channels_2, \
    kernel_h_2, kernel_w_2, pad_h_2, pad_w_2}

int sparsecnn_gradient_then_correlate_f32(const float *maps, const float *signals, float alpha,
                                          float *dw, float alpha_bias, float *dbias,
                                          SPARSECNN_GEOMETRY, const float *in, const float *w,
                                          float sign, const Epilogue<float> *epilogue,
                                          float *out, SPARSECNN_GEOMETRY_2) {
    return gradient_then_correlate<float>(maps, signals, alpha, dw, alpha_bias, dbias,
                                          SPARSECNN_MAKE, in, w, sign, *epilogue, out,
                                          SPARSECNN_MAKE_2);
}

int sparsecnn_gradient_then_correlate_f64(const double *maps, const double *signals,
                                          double alpha, double *dw, double alpha_bias,
                                          double *dbias, SPARSECNN_GEOMETRY, const double *in,
                                          const double *w, double sign,
                                          const Epilogue<double> *epilogue, double *out,
                                          SPARSECNN_GEOMETRY_2) {
    return gradient_then_correlate<double>(maps, signals, alpha, dw, alpha_bias, dbias,
                                           SPARSECNN_MAKE, in, w, sign, *epilogue, out,
                                           SPARSECNN_MAKE_2);
}

}  // extern "C"
