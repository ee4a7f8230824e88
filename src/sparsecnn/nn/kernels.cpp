// Stride-1 convolution kernels of the k-step layer (sparsecnn.nn.native, issue 4 section 7).
//
// Plain C ABI, no Python or torch headers: compiled on first use with the machine's C++
// compiler (-O3 -march=native -fopenmp) and loaded with ctypes.  OpenMP resolves to the
// libgomp.so.1 that torch has already loaded, so these loops share torch's thread pool.
//
// correlate: out[b,o,i,j] = relu?( sign * sum_{c,p,q} w[o,c,p,q] in_pad[b,c,i+p,j+q]
//                                  + bias[o] + addend[b,o,i,j] )
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
constexpr int TILE = 8;        // output channels per register tile
constexpr int VECTORS = 2;     // vectors per row segment

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

// zero-padded copy of one signal: rows of `row_len` >= width + 2 pad_w, plus slack columns
template <typename T>
void pad_signal(const T *in, const Geometry &g, int row_len, int rows, T *scratch) {
    std::memset(scratch, 0, sizeof(T) * (size_t)g.in_channels * rows * row_len);
    for (int c = 0; c < g.in_channels; c++)
        for (int i = 0; i < g.height; i++)
            std::memcpy(scratch + ((size_t)c * rows + i + g.pad_h) * row_len + g.pad_w,
                        in + ((size_t)c * g.height + i) * g.width, sizeof(T) * g.width);
}

template <typename T> struct Layout {
    int segment, segments, row_len, rows;
    explicit Layout(const Geometry &g) {
        segment = VECTORS * Vec<T>::lanes;
        segments = (g.out_w() + segment - 1) / segment;
        row_len = segments * segment + g.kernel_w - 1;
        if (row_len < g.width + 2 * g.pad_w) row_len = g.width + 2 * g.pad_w;
        rows = g.height + 2 * g.pad_h;
    }
    size_t scratch() const { return (size_t)rows * row_len; }
};

template <typename T, int N>
void correlate_tile(const T *scratch, const Layout<T> &lay, const Geometry &g, const T *w,
                    int o0, const T *bias, T sign, const T *addend, bool relu, T *out) {
    typedef typename Vec<T>::type V;
    constexpr int L = Vec<T>::lanes;
    const int taps = g.in_channels * g.kernel_h * g.kernel_w;
    const int oh = g.out_h(), ow = g.out_w();
    // weights of the tile, tap-major: one broadcast per (tap, channel)
    T *wt = static_cast<T *>(std::malloc(sizeof(T) * (size_t)taps * N));
    for (int t = 0; t < taps; t++)
        for (int u = 0; u < N; u++) wt[t * N + u] = sign * w[(size_t)(o0 + u) * taps + t];
    T tail[VECTORS * L];
    for (int i = 0; i < oh; i++) {
        for (int s = 0; s < lay.segments; s++) {
            const int j0 = s * lay.segment;
            V acc[N][VECTORS];
            for (int u = 0; u < N; u++)
                for (int h = 0; h < VECTORS; h++) acc[u][h] = V{} ;
            int t = 0;
            for (int c = 0; c < g.in_channels; c++)
                for (int p = 0; p < g.kernel_h; p++) {
                    const T *row = scratch + ((size_t)c * lay.rows + i + p) * lay.row_len + j0;
                    for (int q = 0; q < g.kernel_w; q++, t++) {
                        V r[VECTORS];
                        for (int h = 0; h < VECTORS; h++) r[h] = load<T>(row + q + h * L);
                        const T *wk = wt + t * N;
                        for (int u = 0; u < N; u++)
                            for (int h = 0; h < VECTORS; h++) acc[u][h] += wk[u] * r[h];
                    }
                }
            const int valid = ow - j0 < lay.segment ? ow - j0 : lay.segment;
            for (int u = 0; u < N; u++) {
                const size_t offset = ((size_t)(o0 + u) * oh + i) * ow + j0;
                const T b = bias ? bias[o0 + u] : T(0);
                for (int h = 0; h < VECTORS; h++) {
                    V v = acc[u][h] + b;
                    store<T>(tail + h * L, v);
                }
                if (addend)
                    for (int j = 0; j < valid; j++) tail[j] += addend[offset + j];
                if (relu)
                    for (int j = 0; j < valid; j++) tail[j] = tail[j] > T(0) ? tail[j] : T(0);
                std::memcpy(out + offset, tail, sizeof(T) * valid);
            }
        }
    }
    std::free(wt);
}

template <typename T, int N>
void correlate_remainder(const T *scratch, const Layout<T> &lay, const Geometry &g,
                         const T *w, int o0, int n, const T *bias, T sign, const T *addend,
                         bool relu, T *out) {
    if constexpr (N > 0) {
        if (n == N)
            return correlate_tile<T, N>(scratch, lay, g, w, o0, bias, sign, addend, relu, out);
        correlate_remainder<T, N - 1>(scratch, lay, g, w, o0, n, bias, sign, addend, relu, out);
    }
}

template <typename T>
int correlate(const T *in, const T *w, const T *bias, T sign, const T *addend, int relu,
              T *out, Geometry g) {
    if (g.out_h() < 1 || g.out_w() < 1) return 1;
    const Layout<T> lay(g);
    const int blocks = (g.out_channels + TILE - 1) / TILE;
    const size_t in_size = (size_t)g.in_channels * g.height * g.width;
    const size_t out_size = (size_t)g.out_channels * g.out_h() * g.out_w();
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
                const int o0 = block * TILE;
                const int n = g.out_channels - o0 < TILE ? g.out_channels - o0 : TILE;
                correlate_remainder<T, TILE>(scratch, lay, g, w, o0, n, bias, sign,
                                             addend ? addend + b * out_size : nullptr,
                                             relu != 0, out + b * out_size);
            }
        std::free(scratch);
    }
    return failed;
}

template <typename T, int N>
void gradient_tile(const T *m, const T *scratch, const Layout<T> &lay, const Geometry &g,
                   int o0, T alpha, T *dw) {
    typedef typename Vec<T>::type V;
    constexpr int L = Vec<T>::lanes;
    const int oh = g.out_h(), ow = g.out_w();
    const int full = ow / lay.segment;  // segments without a tail
    const int taps = g.in_channels * g.kernel_h * g.kernel_w;
    int t = 0;
    for (int c = 0; c < g.in_channels; c++)
        for (int p = 0; p < g.kernel_h; p++)
            for (int q = 0; q < g.kernel_w; q++, t++) {
                V acc[N][VECTORS];
                for (int u = 0; u < N; u++)
                    for (int h = 0; h < VECTORS; h++) acc[u][h] = V{};
                T rest[N] = {};
                for (int i = 0; i < oh; i++) {
                    const T *row = scratch + ((size_t)c * lay.rows + i + p) * lay.row_len + q;
                    for (int s = 0; s < full; s++) {
                        const int j0 = s * lay.segment;
                        V r[VECTORS];
                        for (int h = 0; h < VECTORS; h++) r[h] = load<T>(row + j0 + h * L);
                        for (int u = 0; u < N; u++) {
                            const T *mrow = m + ((size_t)(o0 + u) * oh + i) * ow + j0;
                            for (int h = 0; h < VECTORS; h++)
                                acc[u][h] += load<T>(mrow + h * L) * r[h];
                        }
                    }
                    for (int j = full * lay.segment; j < ow; j++)
                        for (int u = 0; u < N; u++)
                            rest[u] += m[((size_t)(o0 + u) * oh + i) * ow + j] * row[j];
                }
                for (int u = 0; u < N; u++) {
                    T total = rest[u];
                    for (int h = 0; h < VECTORS; h++)
                        for (int l = 0; l < L; l++) total += acc[u][h][l];
                    dw[(size_t)(o0 + u) * taps + t] += alpha * total;
                }
            }
}

template <typename T, int N>
void gradient_remainder(const T *m, const T *scratch, const Layout<T> &lay, const Geometry &g,
                        int o0, int n, T alpha, T *dw) {
    if constexpr (N > 0) {
        if (n == N) return gradient_tile<T, N>(m, scratch, lay, g, o0, alpha, dw);
        gradient_remainder<T, N - 1>(m, scratch, lay, g, o0, n, alpha, dw);
    }
}

template <typename T>
int weight_gradient(const T *m, const T *in, T alpha, T *dw, T alpha_bias, T *dbias,
                    Geometry g) {
    if (g.out_h() < 1 || g.out_w() < 1) return 1;
    const Layout<T> lay(g);
    const int blocks = (g.out_channels + TILE - 1) / TILE;
    const size_t in_size = (size_t)g.in_channels * g.height * g.width;
    const size_t m_size = (size_t)g.out_channels * g.out_h() * g.out_w();
    const int threads = omp_get_max_threads();
    // every thread owns whole output-channel blocks when there are enough of them (no
    // reduction); otherwise signals are split and the partial sums added at the end
    const bool by_block = blocks >= 2 * threads || g.batch < threads;
    const size_t weights = (size_t)g.out_channels * g.in_channels * g.kernel_h * g.kernel_w;
    int failed = 0;
#pragma omp parallel
    {
        T *scratch = static_cast<T *>(
            std::malloc(sizeof(T) * ((size_t)g.in_channels * lay.scratch() + lay.segment)));
        T *partial = by_block ? dw : static_cast<T *>(std::calloc(weights, sizeof(T)));
        if (!scratch || !partial) {
#pragma omp atomic write
            failed = 2;
        }
        if (by_block) {
            // signals outer, blocks split: each thread pads every signal once
            const int id = omp_get_thread_num(), count = omp_get_num_threads();
            for (int b = 0; b < g.batch && scratch; b++) {
                pad_signal<T>(in + b * in_size, g, lay.row_len, lay.rows, scratch);
                for (int block = id; block < blocks; block += count) {
                    const int o0 = block * TILE;
                    const int n = g.out_channels - o0 < TILE ? g.out_channels - o0 : TILE;
                    gradient_remainder<T, TILE>(m + b * m_size, scratch, lay, g, o0, n, alpha,
                                                dw);
                }
            }
        } else {
#pragma omp for schedule(static)
            for (int b = 0; b < g.batch; b++) {
                if (!scratch || !partial) continue;
                pad_signal<T>(in + b * in_size, g, lay.row_len, lay.rows, scratch);
                for (int block = 0; block < blocks; block++) {
                    const int o0 = block * TILE;
                    const int n = g.out_channels - o0 < TILE ? g.out_channels - o0 : TILE;
                    gradient_remainder<T, TILE>(m + b * m_size, scratch, lay, g, o0, n, alpha,
                                                partial);
                }
            }
#pragma omp critical
            if (partial)
                for (size_t e = 0; e < weights; e++) dw[e] += partial[e];
            std::free(partial);
        }
        std::free(scratch);
    }
    if (dbias) {
        const size_t plane = (size_t)g.out_h() * g.out_w();
#pragma omp parallel for schedule(static)
        for (int o = 0; o < g.out_channels; o++) {
            T total = 0;
            for (int b = 0; b < g.batch; b++) {
                const T *x = m + b * m_size + o * plane;
                for (size_t e = 0; e < plane; e++) total += x[e];
            }
            dbias[o] += alpha_bias * total;
        }
    }
    return failed;
}

}  // namespace

extern "C" {

int sparsecnn_vector_bytes() { return VECTOR_BYTES; }

#define SPARSECNN_GEOMETRY int batch, int in_channels, int height, int width, int out_channels, \
    int kernel_h, int kernel_w, int pad_h, int pad_w
#define SPARSECNN_MAKE Geometry{batch, in_channels, height, width, out_channels, kernel_h, \
    kernel_w, pad_h, pad_w}

int sparsecnn_correlate_f32(const float *in, const float *w, const float *bias, float sign,
                            const float *addend, int relu, float *out, SPARSECNN_GEOMETRY) {
    return correlate<float>(in, w, bias, sign, addend, relu, out, SPARSECNN_MAKE);
}

int sparsecnn_correlate_f64(const double *in, const double *w, const double *bias,
                            double sign, const double *addend, int relu, double *out,
                            SPARSECNN_GEOMETRY) {
    return correlate<double>(in, w, bias, sign, addend, relu, out, SPARSECNN_MAKE);
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

}  // extern "C"
