/*
 * skinny.cu — narrow bf16-weight products at decoding batches (9 to 64 rows; out_f <= 256, which
 * is x_proj's shape: 144 x 3584) on the tensor cores: y (n, out_f) = x (n, in_f) W^T (+ bias),
 * x bf16.
 *
 * Why: cuBLAS takes ~7.7-8.8 us for x_proj at 16 to 64 rows (1 MB of weights, ~0.25 us at the
 * copy rate): a few output tiles over a long inner dimension leave most SMs idle. Here a block
 * owns 64 weight rows and up to 64 rows of x (8 warps: 4 along the weights x 2 along x), streams
 * both through a 4-stage cp.async pipeline (the weights' first stages issued before the PDL wait:
 * nothing in the stream writes them) and multiplies with mma.m16n8k16 (weights as A, x as B,
 * fp32 accumulators). The inner dimension is split over the blocks of a thread-block cluster
 * (up to 8), which add their partial sums through distributed shared memory in rank order: the
 * same bits on every run and in graph replay, no second kernel, no scratch.
 *
 * Not for wide products: in_proj and out_proj at 16 to 64 rows ran at 1.0-2.2 TB/s here against
 * cuBLAS's 1.4-2.5 (docs/cuda_notes.md, "Narrow products at decoding batches"), so they stay on
 * cuBLAS, as do products of more than 64 rows.
 *
 * Eligible (mbcuda_skinny_ok): Hopper or later, in_f and ldx multiples of 8, x and W 16-byte
 * aligned, out_f <= 256, 9 <= n <= the context's mma_rows (MAMBABYTE_CUDA_MMA_ROWS, default 64;
 * 0 turns it off).
 */
#include <cooperative_groups.h>

#include "cuda_internal.cuh"

namespace cg = cooperative_groups;

#define SK_BM 64       /* weight rows (output features) a block */
#define SK_BK 64       /* inner-dimension slice a pipeline stage */
#define SK_LDS (SK_BK + 8) /* shared row stride in bf16: 144 bytes, so ldmatrix's 8 rows hit
                            * distinct banks */
#define SK_MAX_SPLIT 8 /* portable cluster size */
#define SK_WN 2        /* warps along x's rows (a block: 4 x 2 warps) */
#define SK_STAGES 4
#define SK_NARROW 256  /* the widest product (out_f) it takes: wider ones stay on cuBLAS */

static size_t skinny_smem_bytes(int nt, int stages) {
  return (size_t)stages * (SK_BM + 8 * nt) * SK_LDS * sizeof(uint16_t);
}

__device__ __forceinline__ void sk_cp16(void *smem, const void *g, bool valid) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  /* src-size 0 fills the 16 bytes with zeros (rows past the matrix, k past the slice) */
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(g),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void sk_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void sk_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void sk_ldmatrix_x4(uint32_t r[4], const void *smem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void sk_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void sk_ldmatrix_x2(uint32_t r[2], const void *smem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(s));
}

/* One block: weight rows row0 .. row0 + 63, x rows nb0 .. nb0 + 8 NT - 1, inner slice
 * [blockIdx.z * kps, + kps) of in_f; 4 x WN warps, warp (wm, wn) owning weight rows 16 wm .. + 15
 * and n-tiles NT / WN wn .. + NT / WN - 1 (NT = 2: one n-tile a warp, x's fragment by
 * ldmatrix.x2). split > 1: the blockIdx.z blocks of a cluster add up. */
template <int NT>
__global__ void __launch_bounds__(128 * SK_WN)
    k_skinny_mma(const uint16_t *__restrict__ w, const uint16_t *__restrict__ x, int64_t ldx,
                 int n, int in_f, int out_f, int kps, int split, const float *__restrict__ bias,
                 float *__restrict__ y, int64_t ldy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int WN = SK_WN, STAGES = SK_STAGES;
  constexpr int BN = 8 * NT, T = 128 * WN, NTW = NT / WN;
  constexpr int WCH = SK_BM * SK_BK / 8 / T;            /* 16-byte weight chunks a thread */
  constexpr int XCH = (BN * SK_BK / 8 + T - 1) / T;     /* x chunks a thread (the last partial) */
  constexpr int WSTAGE = SK_BM * SK_LDS, XSTAGE = BN * SK_LDS; /* elements a stage */
  extern __shared__ __align__(16) uint16_t sk_smem[];
  uint16_t *sw = sk_smem, *sx = sk_smem + STAGES * WSTAGE;
  mb_pdl_trigger();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp & 3, wn = warp >> 2;
  const int row0 = blockIdx.x * SK_BM, nb0 = blockIdx.y * BN;
  const int kbeg = blockIdx.z * kps, kend = min(in_f, kbeg + kps);
  const int kt_n = (kend - kbeg + SK_BK - 1) / SK_BK;
  /* every chunk of a thread sits at the same column kc of its stage (T is a multiple of 8): it
   * is loaded while kt * BK < klim */
  const int kc = (tid & 7) * 8, klim = kend - kbeg - kc;
  const uint16_t *wp[WCH];
  int wso[WCH];
  bool wok[WCH];
#pragma unroll
  for (int i = 0; i < WCH; i++) {
    const int r = (tid + i * T) >> 3;
    wok[i] = row0 + r < out_f;
    wp[i] = wok[i] ? w + (int64_t)(row0 + r) * in_f + kbeg + kc : w;
    wso[i] = r * SK_LDS + kc;
  }
  const uint16_t *xp[XCH];
  int xso[XCH];
  bool xok[XCH], xin[XCH];
#pragma unroll
  for (int i = 0; i < XCH; i++) {
    const int c = tid + i * T, r = c >> 3;
    xin[i] = c < BN * SK_BK / 8;
    xok[i] = xin[i] && nb0 + r < n;
    xp[i] = xok[i] ? x + (int64_t)(nb0 + r) * ldx + kbeg + kc : x;
    xso[i] = r * SK_LDS + kc;
  }
  auto load_w = [&](int kt) {
    const bool kin = kt < kt_n && kt * SK_BK < klim;
    uint16_t *d = sw + (kt % STAGES) * WSTAGE;
#pragma unroll
    for (int i = 0; i < WCH; i++) {
      const bool ok = kin && wok[i];
      sk_cp16(d + wso[i], ok ? wp[i] + kt * SK_BK : w, ok);
    }
  };
  auto load_x = [&](int kt) {
    const bool kin = kt < kt_n && kt * SK_BK < klim;
    uint16_t *d = sx + (kt % STAGES) * XSTAGE;
#pragma unroll
    for (int i = 0; i < XCH; i++) {
      const bool ok = kin && xok[i];
      if (xin[i]) sk_cp16(d + xso[i], ok ? xp[i] + kt * SK_BK : x, ok);
    }
  };

  /* the weights' first stages before the wait (constant), then x's */
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) load_w(s);
  mb_pdl_wait();
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    load_x(s);
    sk_commit();
  }

  float acc[NTW][4];
#pragma unroll
  for (int j = 0; j < NTW; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  /* ldmatrix row addresses: A (16 x 16 of the weights) and B (8 x 16 of x per n-tile) */
  const int a_off = (wm * 16 + (lane & 15)) * SK_LDS + (lane >> 4) * 8;
  const int m8 = lane >> 3;
  const int b_off = (wn * NTW * 8 + (NTW >= 2 ? (m8 >> 1) * 8 : 0) + (lane & 7)) * SK_LDS +
                    (m8 & 1) * 8;

  for (int kt = 0; kt < kt_n; kt++) {
    sk_wait<STAGES - 2>();
    __syncthreads(); /* stage kt landed for every thread; slot (kt - 1) % STAGES is free */
    load_w(kt + STAGES - 1);
    load_x(kt + STAGES - 1);
    sk_commit();
    const uint16_t *aw = sw + (kt % STAGES) * WSTAGE + a_off;
    const uint16_t *bx = sx + (kt % STAGES) * XSTAGE + b_off;
#pragma unroll
    for (int kk = 0; kk < SK_BK; kk += 16) {
      uint32_t a[4];
      sk_ldmatrix_x4(a, aw + kk);
      if constexpr (NTW == 1) {
        uint32_t b[2];
        sk_ldmatrix_x2(b, bx + kk);
        sk_mma(acc[0], a, b[0], b[1]);
      } else {
#pragma unroll
        for (int j = 0; j < NTW; j += 2) {
          uint32_t b[4];
          sk_ldmatrix_x4(b, bx + j * 8 * SK_LDS + kk);
          sk_mma(acc[j], a, b[0], b[1]);
          sk_mma(acc[j + 1], a, b[2], b[3]);
        }
      }
    }
  }
  sk_wait<0>();
  __syncthreads(); /* every warp is done with the pipeline: its memory holds the partial tile */

  /* the tile (BN x BM, x row major) in shared memory; accumulator (row g / g + 8, cols 2t, 2t + 1)
   * of the warp's n-tile j is weight row 16 wm + g (+ 8), x row 8 (NTW wn + j) + 2 t (+ 1) */
  float *red = reinterpret_cast<float *>(sk_smem);
  {
    const int g = lane >> 2, t = lane & 3, m = wm * 16 + g;
#pragma unroll
    for (int j = 0; j < NTW; j++) {
      const int c = (wn * NTW + j) * 8 + 2 * t;
      red[c * SK_BM + m] = acc[j][0];
      red[(c + 1) * SK_BM + m] = acc[j][1];
      red[c * SK_BM + m + 8] = acc[j][2];
      red[(c + 1) * SK_BM + m + 8] = acc[j][3];
    }
  }
  constexpr int TILE = BN * SK_BM;
  if (split == 1) {
    __syncthreads();
    for (int e = tid; e < TILE; e += T) {
      const int r = e / SK_BM, m = e % SK_BM;
      if (nb0 + r < n && row0 + m < out_f) {
        float v = red[e];
        if (bias) v += bias[row0 + m];
        y[(int64_t)(nb0 + r) * ldy + row0 + m] = v;
      }
    }
  } else {
    cg::cluster_group cl = cg::this_cluster();
    cl.sync(); /* every block's partial tile is in its shared memory */
    const int rank = (int)cl.block_rank(), per = TILE / split;
    for (int e = rank * per + tid; e < (rank + 1) * per; e += T) {
      const int r = e / SK_BM, m = e % SK_BM;
      float v = 0.f;
      for (int q = 0; q < split; q++) v += cl.map_shared_rank(red, q)[e]; /* rank order */
      if (nb0 + r < n && row0 + m < out_f) {
        if (bias) v += bias[row0 + m];
        y[(int64_t)(nb0 + r) * ldy + row0 + m] = v;
      }
    }
    cl.sync(); /* no block leaves while another still reads its shared memory */
  }
#endif
}

extern "C" int mbcuda_skinny_ok(mb_ctx *ctx, int64_t n, int64_t in_f, int64_t out_f,
                                const void *x, int64_t ldx, const void *w) {
  const mbcuda_state *st = mbcuda_st(ctx);
  return st->cc_major >= 9 && n >= 9 && n <= st->mma_rows && in_f > 0 && out_f > 0 &&
         out_f <= SK_NARROW &&
         in_f % 8 == 0 && ldx % 8 == 0 && in_f <= INT32_MAX && out_f <= INT32_MAX &&
         ((uintptr_t)x % 16) == 0 && ((uintptr_t)w % 16) == 0;
}

template <int NT>
static cudaError_t skinny_launch(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const uint16_t *w,
                                 const float *bias, int n, int in_f, int out_f, float *y,
                                 int64_t ldy) {
  mbcuda_state *st = mbcuda_st(ctx);
  const size_t smem = skinny_smem_bytes(NT, SK_STAGES);
  const int bit = 1 << NT; /* NT: 2, 4 or 8 */
  if (!(st->skinny_smem_set & bit)) {
    cudaError_t e = cudaFuncSetAttribute(k_skinny_mma<NT>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    st->skinny_smem_set |= bit;
  }
  const int tiles_m = (out_f + SK_BM - 1) / SK_BM, tiles_n = (n + 8 * NT - 1) / (8 * NT);
  const int chunks = (in_f + SK_BK - 1) / SK_BK;
  /* split the inner dimension while the blocks are fewer than two an SM and every slice keeps
   * >= 4 stages of work */
  int split = 1;
  while (split < SK_MAX_SPLIT && (int64_t)tiles_m * tiles_n * split < 2 * st->sm_count &&
         chunks >= 4 * 2 * split)
    split *= 2;
  const int kps = ((chunks + split - 1) / split) * SK_BK;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)tiles_m, (unsigned)tiles_n, (unsigned)split);
  cfg.blockDim = dim3(128 * SK_WN);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st->stream;
  cudaLaunchAttribute attr[2];
  int na = 0;
  if (split > 1) {
    attr[na].id = cudaLaunchAttributeClusterDimension;
    attr[na].val.clusterDim.x = 1;
    attr[na].val.clusterDim.y = 1;
    attr[na].val.clusterDim.z = (unsigned)split;
    na++;
  }
  if (st->pdl) {
    attr[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[na].val.programmaticStreamSerializationAllowed = 1;
    na++;
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  return cudaLaunchKernelEx(&cfg, k_skinny_mma<NT>, w, x, ldx, n, in_f, out_f, kps, split,
                            bias, y, ldy);
}

extern "C" cudaError_t mbcuda_skinny_bf16(mb_ctx *ctx, const uint16_t *x, int64_t ldx,
                                          const uint16_t *w, const float *bias, int64_t n,
                                          int64_t in_f, int64_t out_f, float *y, int64_t ldy) {
  const int nn = (int)n, k = (int)in_f, m = (int)out_f;
  const int rows = nn < 64 ? nn : 64; /* a block's x rows: the batch, in tiles of 64 beyond */
  if (rows <= 16) return skinny_launch<2>(ctx, x, ldx, w, bias, nn, k, m, y, ldy);
  if (rows <= 32) return skinny_launch<4>(ctx, x, ldx, w, bias, nn, k, m, y, ldy);
  return skinny_launch<8>(ctx, x, ldx, w, bias, nn, k, m, y, ldy);
}
