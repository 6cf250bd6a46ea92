/*
 * fused_inproj_probe.cu — can a decoding batch's conv step and x_proj ride on in_proj's epilogue?
 * At 64 sequences a layer's step runs cuBLAS's in_proj (9.5 us exposed), then k_conv_linear (the
 * conv step, x_proj's partial products, a grid barrier and their reduction: 10.4 us with the bus
 * nearly idle; docs/cuda_notes.md, "The conv step and x_proj in in_proj's epilogue at decoding
 * batches: a probe"). Each in_proj tile of 64 channels x 64 sequences holds every input the conv
 * step of those channels needs, and
 * x_proj's partial product over them, so the second kernel's weights round trip, its start and its
 * conv loads could go. This probe builds that product outside the library and times three things in
 * one process (a graph of 48 calls over 48 weight copies each, as a step's layers):
 *   1. cuBLAS's in_proj (as the library calls it);
 *   2. in_proj as a kernel of our own whose weights come by 2D tensor copies (TMA, 128-byte
 *      swizzle) straight from the row-major matrix, no tiled copy made at load: the stages of
 *      batch_gemm_probe.cu (which reached cuBLAS's rate from tiles made at load), a producer warp
 *      and four mma.sync warps, one CTA an SM;
 *   3. the same product with the fused epilogue: CTAs of the x half run the conv step of their 64
 *      channels from the tile (the conv states and x_proj's slice of weights asked for by tensor
 *      copies behind the first stages), write u and the new states, multiply u (bf16) by the slice
 *      into x_proj's partial sums, meet at a barrier of the x half's 56 CTAs and sum the partials
 *      in a fixed order; CTAs of the z half store z.
 * Each result is checked against plain fp32 reference kernels first. Then the same behind the
 * kernel that comes before in_proj in a step (a norm of the residual plus out_proj's 4 parts into
 * x's bf16 rows, one block a sequence), where only a kernel of our own can start early: with the
 * programmatic launch it asks for its first weight stages before griddepcontrol.wait, and for x
 * (the norm's output) after it. What decides: the fused chain less cuBLAS's chain, against
 * k_conv_linear's exposed time in the same call (cuda_bench --timeline 64). Last, the same early
 * start for out_proj (4 parts over its inputs, left unsummed as the library leaves them) behind a
 * stand-in for the state update (29 MB of states read and written), against cuBLAS's strided
 * batch. An experiment, not part of the library:
 *   nvcc -O3 -arch=sm_90 -Itools/device -o fused_inproj_probe tools/device/fused_inproj_probe.cu \
 *     -lcublas && timeout 120 ./fused_inproj_probe
 */
#include <cublas_v2.h>
#include <cuda.h> /* CUtensorMap and its encoder's type (found through the runtime: no -lcuda) */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <type_traits>

#include "device_check.h"
#include "probe_common.cuh"

#define MB 64             /* sequences: every CTA's x tile holds all of them */
#define DM 1792           /* d_model: in_proj's inputs */
#define DI 3584           /* d_inner: the x half, then the z half of in_proj's outputs */
#define NI (2 * DI)       /* in_proj's outputs */
#define XO 144            /* x_proj's outputs: dt_rank 112 + 2 d_state */
#define KC 4              /* conv width */
#define TN 64             /* in_proj's outputs a CTA (channels of the x half) */
#define TK 64             /* inputs a stage */
#define TILE (TN * TK)    /* bf16 elements of a 64 x 64 tile */
#define NXC (DI / TN)     /* CTAs of the x half: 56 */
#define CONSUMERS 4       /* mma warps: 16 output rows each */
#define CT (CONSUMERS * 32)
#define THREADS (CT + 32) /* and the producer warp */
#define LAYERS 48
#define XZ_LD 68                /* fp32 rows of the staged tile (16-byte aligned, banks apart) */
#define PS_LD (XO + 4)          /* fp32 rows of the staged partial sums */
#define ST_ROW (TN * (KC - 1))  /* a sequence's conv states of the CTA's channels: 192 floats */

/* the products' shapes: outputs, inputs, and the parts the inputs are split into (a CTA a part,
 * the parts' sums left unsummed, as the library's out_proj leaves them to the next norm) */
struct InProj {
  static constexpr int N = NI, K = DM, SPLIT = 1;
};
struct OutProj {
  static constexpr int N = DM, K = DI, SPLIT = 4;
};

/* dynamic shared memory, from a 1024-byte aligned base (the 128-byte swizzle's pattern repeats
 * every 1024 bytes and the tensor copies place it from the destination's address) */
template <int STAGES>
struct Smem {
  static constexpr int WX = STAGES * 2 * TILE * 2;    /* x_proj's slice: XO rows of 64 bf16 */
  static constexpr int ST = WX + XO * TK * 2;         /* the conv states: MB x ST_ROW fp32 */
  static constexpr int UT = ST + MB * ST_ROW * 4;     /* u as a swizzled 64 x 64 bf16 tile */
  static constexpr int BYTES = UT + TILE * 2 + 1024;  /* and the alignment's slack */
  static_assert(WX % 1024 == 0 && ST % 1024 == 0 && UT % 1024 == 0, "1024-byte aligned parts");
  static_assert(MB * XZ_LD * 4 <= WX && MB * PS_LD * 4 <= WX,
                "the epilogue's tiles fit the stages");
};

/* tiles in probe_common.cuh's tile_at layout: what the 128-byte swizzle writes for 64 bf16 a row */
static_assert(TK == 64 && TN == 64 && MB == 64, "tile_at's tiles, mma_rows16_x64's 64 columns");

__device__ __forceinline__ void pdl_trigger() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
/* the four mma warps alone (the producer warp has left) */
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(CT)); }

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ unsigned atom_add_acq_rel(unsigned *p, unsigned v) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;"
               : "=r"(old)
               : "l"(p), "r"(v)
               : "memory");
  return old;
}
__device__ __forceinline__ void red_add_release(unsigned *p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/* The x half's CTAs meet (all resident: main() checks one CTA an SM fits on every SM the grid
 * takes): k_conv_linear's barrier, over NXC CTAs. bar[0] arrivals (back to 0 for the next
 * launch), bar[1] the generation. */
__device__ __forceinline__ void xhalf_sync(unsigned *bar) {
  consumers_sync();
  if (threadIdx.x == 0) {
    const unsigned g0 = ld_acquire(bar + 1);
    if (atom_add_acq_rel(bar, 1u) == NXC - 1) {
      atomicExch(bar, 0u);
      red_add_release(bar + 1, 1u);
    } else {
      while (ld_acquire(bar + 1) == g0) __nanosleep(32);
    }
  }
  consumers_sync();
}

__device__ __forceinline__ uint16_t f32_to_bf16(float f) { /* nearest even (finite values) */
  const uint32_t u = __float_as_uint(f);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

/* the phases' times, ns (the instrumented run): NORM_* by the norm's block 0, the rest by thread
 * 0 of in_proj's CTA 0 (an x CTA in the fused form), Z_END by CTA NXC's (a z CTA) */
enum Stamp {
  NORM_START, NORM_END, START, WAITED, PRODUCT, STAGED, AUX, CONV, XPROJ, PARTS, BARRIER, END,
  Z_END, NSTAMPS
};
__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

struct Args {
  float *y;             /* plain: SPLIT x MB x N; fused: z, MB x DI */
  const float *cw, *cb; /* conv weight (DI, KC), bias (DI) */
  float *state;         /* (MB, DI, KC - 1): what the state map reads, written back */
  float *xc;            /* u: MB x DI */
  float *part;          /* NXC x MB x XO partial sums */
  float *dbl;           /* MB x XO */
  unsigned *bar;
  unsigned long long *stamps; /* NSTAMPS of them, or NULL */
};

/* CTA (n, p): outputs 64 n .. 64 n + 63 of the product (in_proj unless SH says otherwise) over
 * part p of its inputs, for all MB sequences. Warp CONSUMERS is the
 * producer (its lane 0 asks for every stage: the weights' boxes of the first STAGES stages, then
 * x's, then the rest in turn); consumer warp w owns output rows 16 w .. 16 w + 15 against the 64
 * sequences (8 n8 tiles, 32 accumulators a thread). FUSED: CTAs n < NXC run the conv step and
 * x_proj's partials of their channels, the rest store z. Launched programmatically, the weights'
 * first boxes go before griddepcontrol.wait (nothing in a step writes weights) and x's, the conv
 * states' and everything the consumers store after it (the consumers touch no global memory
 * before x's boxes, which the wait orders, have landed). */
template <int STAGES, bool FUSED, class SH>
__global__ void __launch_bounds__(THREADS, 1)
    k_inproj(const __grid_constant__ CUtensorMap tw, const __grid_constant__ CUtensorMap tx,
             const __grid_constant__ CUtensorMap tst, const __grid_constant__ CUtensorMap twx,
             Args a) {
  using S = Smem<STAGES>;
  extern __shared__ uint8_t smraw[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES], aux;
  const unsigned raw = smem_u32(smraw);
  uint8_t *const sm = smraw + (((raw + 1023u) & ~1023u) - raw);
  uint16_t *const stg = (uint16_t *)sm;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, nt = blockIdx.x;
  const bool xcta = FUSED && nt < NXC;
  constexpr int NK = SH::K / TK / SH::SPLIT; /* the CTA's stages */
  static_assert(NK >= STAGES, "the first stages' boxes before the rest");
  static_assert(SH::K % (TK * SH::SPLIT) == 0 && SH::N % TN == 0, "whole tiles");
  static_assert(!FUSED || (SH::N == NI && SH::K == DM && SH::SPLIT == 1),
                "the fused form: in_proj");
  const int kt0 = blockIdx.y * NK;
  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) mbar_init(&full[s], 2), mbar_init(&empty[s], CONSUMERS);
    mbar_init(&aux, 1);
  }
  __syncthreads();
  const auto stamp = [&](int i) {
    if (a.stamps && tid == 0 && nt == 0) a.stamps[i] = now_ns();
  };
  stamp(START);
  if (warp == CONSUMERS) {
    if (lane == 0) {
      /* a stage's barrier takes two arrivals, each announcing its box's bytes */
      const auto wbox = [&](int i) {
        uint16_t *const dst = stg + (size_t)(i % STAGES) * 2 * TILE;
        mbar_expect_tx(&full[i % STAGES], TILE * 2);
        tensor_load_2d(dst, &tw, (kt0 + i) * TK, nt * TN, &full[i % STAGES]);
      };
      const auto xbox = [&](int i) {
        uint16_t *const dst = stg + (size_t)(i % STAGES) * 2 * TILE + TILE;
        mbar_expect_tx(&full[i % STAGES], TILE * 2);
        tensor_load_2d(dst, &tx, (kt0 + i) * TK, 0, &full[i % STAGES]);
      };
      for (int i = 0; i < STAGES; i++) wbox(i);
      pdl_wait(); /* returns at once without the programmatic launch */
      if (a.stamps && nt == 0) a.stamps[WAITED] = now_ns();
      for (int i = 0; i < STAGES; i++) xbox(i);
      if (xcta) { /* the epilogue's operands, behind the first stages */
        mbar_expect_tx(&aux, XO * TK * 2 + MB * ST_ROW * 4);
        tensor_load_2d(sm + S::WX, &twx, nt * TN, 0, &aux);
        tensor_load_2d(sm + S::ST, &tst, nt * ST_ROW, 0, &aux);
      }
      for (int i = STAGES; i < NK; i++) {
        mbar_wait(&empty[i % STAGES], (unsigned)(i / STAGES - 1) & 1u);
        wbox(i);
        xbox(i);
      }
    }
    return;
  }
  /* the conv's constants of this thread's channel (c = tid % 64 in the epilogue) */
  const int cme = tid & (TN - 1), ch = nt * TN + cme;
  float wc[KC], bc = 0.f;
  if (xcta) {
#pragma unroll
    for (int j = 0; j < KC; j++) wc[j] = a.cw[ch * KC + j];
    bc = a.cb[ch];
  }
  float acc[8][4];
#pragma unroll
  for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  for (int i = 0; i < NK; i++) {
    const int s = i % STAGES;
    mbar_wait(&full[s], (unsigned)(i / STAGES) & 1u);
    const uint16_t *wtile = stg + (size_t)s * 2 * TILE, *xtile = wtile + TILE;
    mma_rows16_x64(wtile, 16 * warp, xtile, acc);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  }
  stamp(PRODUCT);
  /* the tile through shared memory (the stages are free once every warp is past its last one):
   * xz[b][r], d0, d1 = row g, sequences 2t, 2t + 1 of n8 tile j; d2, d3 = row g + 8 */
  consumers_sync();
  float *const xz = (float *)sm;
  store_acc_t(xz, XZ_LD, 16 * warp, acc);
  consumers_sync();
  if (!xcta) { /* plain rows (or z): 16 float4 a sequence's 64 outputs */
    const int ld = FUSED ? DI : SH::N, col = (FUSED ? nt - NXC : nt) * TN;
    float *const yp = a.y + (size_t)blockIdx.y * MB * SH::N;
    for (int i = tid; i < MB * TN / 4; i += CT) {
      const int b = i / (TN / 4), q = i % (TN / 4);
      *(float4 *)(yp + (size_t)b * ld + col + 4 * q) = *(const float4 *)(xz + b * XZ_LD + 4 * q);
    }
    stamp(END);
    if (a.stamps && tid == 0 && nt == NXC) a.stamps[Z_END] = now_ns();
    return;
  }
  stamp(STAGED);
  /* the conv step of channel cme for sequences tid / 64, + 2, ...: k_conv_linear's arithmetic */
  mbar_wait(&aux, 0);
  stamp(AUX);
  const float *const st = (const float *)(sm + S::ST);
  uint16_t *const ut = (uint16_t *)(sm + S::UT);
  for (int b = tid / TN; b < MB; b += CT / TN) {
    const float xv = xz[b * XZ_LD + cme];
    const float *w = st + b * ST_ROW + cme * (KC - 1);
    float c = bc;
#pragma unroll
    for (int j = 0; j < KC - 1; j++) c += wc[j] * w[j];
    c += wc[KC - 1] * xv;
    const float o = silu(c);
    a.xc[(size_t)b * DI + ch] = o;
    float *so = a.state + ((size_t)b * DI + ch) * (KC - 1);
#pragma unroll
    for (int j = 0; j < KC - 2; j++) so[j] = w[j + 1];
    so[KC - 2] = xv;
    ut[tile_at(b, cme)] = f32_to_bf16(o);
  }
  consumers_sync();
  stamp(CONV);
  /* x_proj's partial sums over the 64 channels: P[o][b] = sum_c Wx[o][c] u[b][c], A = the slice
   * (XO = 9 m16 tiles, warp w takes w, w + 4, w + 8), B = u; into ps[b][o] (over xz, now read) */
  const uint16_t *const wxs = (const uint16_t *)(sm + S::WX);
  float *const ps = (float *)sm;
  for (int mt = warp; mt < XO / 16; mt += CONSUMERS) {
    float d[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.f;
    mma_rows16_x64(wxs, 16 * mt, ut, d);
    store_acc_t(ps, PS_LD, 16 * mt, d);
  }
  consumers_sync();
  stamp(XPROJ);
  float *const mypart = a.part + (size_t)nt * MB * XO;
  for (int i = tid; i < MB * XO / 4; i += CT) {
    const int b = i / (XO / 4), q = i % (XO / 4);
    __stcg((float4 *)(mypart + b * XO + 4 * q), *(const float4 *)(ps + b * PS_LD + 4 * q));
  }
  stamp(PARTS);
  xhalf_sync(a.bar);
  stamp(BARRIER);
  /* outputs j and j + NXC * CT of the MB x XO, each summed over the NXC partials in CTA order,
   * every load in flight before the first add */
  for (int j = nt * CT + tid; j < MB * XO; j += NXC * CT) {
    float v[NXC];
#pragma unroll
    for (int p = 0; p < NXC; p++) v[p] = __ldcg(a.part + (size_t)p * MB * XO + j);
    float s = v[0];
#pragma unroll
    for (int p = 1; p < NXC; p++) s += v[p];
    a.dbl[j] = s;
  }
  stamp(END);
}

/* The kernel before in_proj in a step, in the probe's terms: row b's residual plus out_proj's 4
 * partial sums, its LayerNorm (no affine) into x's bf16 row. One block of 256 threads a sequence;
 * it lets its dependents start at once, as the library's kernels do. */
#define NORM_T 256
__global__ void __launch_bounds__(NORM_T) k_norm_like(const float *parts, const float *resid,
                                                     float *resid_out, uint16_t *x,
                                                     unsigned long long *stamps) {
  pdl_trigger();
  if (stamps && blockIdx.x == 0 && threadIdx.x == 0) stamps[NORM_START] = now_ns();
  __shared__ float red[2][NORM_T / 32];
  const int b = blockIdx.x, tid = threadIdx.x;
  constexpr int PER = DM / NORM_T;
  float v[PER], s = 0.f;
#pragma unroll
  for (int i = 0; i < PER; i++) {
    const size_t at = (size_t)b * DM + tid + i * NORM_T;
    v[i] = resid[at];
#pragma unroll
    for (int p = 0; p < 4; p++) v[i] += parts[(size_t)p * MB * DM + at];
    resid_out[at] = v[i];
    s += v[i];
  }
  const auto block_sum = [&](float x, int slot) {
    for (int o = 16; o; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if ((tid & 31) == 0) red[slot][tid >> 5] = x;
    __syncthreads();
    float t = 0.f;
    for (int w = 0; w < NORM_T / 32; w++) t += red[slot][w];
    return t;
  };
  const float mean = block_sum(s, 0) / DM;
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < PER; i++) q += (v[i] - mean) * (v[i] - mean);
  const float rstd = rsqrtf(block_sum(q, 1) / DM + 1e-5f);
#pragma unroll
  for (int i = 0; i < PER; i++)
    x[(size_t)b * DM + tid + i * NORM_T] = f32_to_bf16((v[i] - mean) * rstd);
  if (stamps && b == 0) {
    __syncthreads();
    if (tid == 0) stamps[NORM_END] = now_ns();
  }
}
static_assert(DM % NORM_T == 0, "whole rows a block");

/* The kernel before out_proj in a step, in the probe's terms: the batch state update's traffic
 * (each (sequence, channel)'s 16 fp32 states read and written, 29 MB at 64 sequences) and its
 * output y, x's bf16 rows of out_proj. A thread a (sequence, channel); it lets its dependents
 * start at once. */
#define NSTATE 16
__global__ void __launch_bounds__(256) k_update_like(float *state, uint16_t *y) {
  pdl_trigger();
  const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; /* b * DI + c */
  if (i >= (size_t)MB * DI) return;
  float4 *h = (float4 *)(state + i * NSTATE);
  float acc = 0.f;
#pragma unroll
  for (int q = 0; q < NSTATE / 4; q++) {
    float4 v = __ldcs(h + q);
    v.x = 0.9f * v.x + 0.01f, v.y = 0.9f * v.y + 0.01f;
    v.z = 0.9f * v.z + 0.01f, v.w = 0.9f * v.w + 0.01f;
    __stcs(h + q, v);
    acc += (v.x + v.y) + (v.z + v.w);
  }
  y[i] = f32_to_bf16(acc * (1.f / NSTATE));
}

/* the references: in_proj's rows are k_ref's; the conv step from them (fp32), u rounded to bf16 */
__global__ void k_conv_ref(const float *xz, const float *cw, const float *cb, const float *st_in,
                           float *u, float *st_out, uint16_t *ub) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (c >= DI) return;
  const float *w = st_in + ((size_t)b * DI + c) * (KC - 1);
  const float xv = xz[(size_t)b * NI + c];
  float acc = cb[c];
  for (int j = 0; j < KC - 1; j++) acc += cw[c * KC + j] * w[j];
  acc += cw[c * KC + KC - 1] * xv;
  const float o = acc / (1.f + expf(-acc));
  u[(size_t)b * DI + c] = o;
  ub[(size_t)b * DI + c] = f32_to_bf16(o);
  float *so = st_out + ((size_t)b * DI + c) * (KC - 1);
  for (int j = 0; j < KC - 2; j++) so[j] = w[j + 1];
  so[KC - 2] = xv;
}

/* largest |a - r| over the largest |r|, with a column slice: a (rows x acols, ld lda) against r
 * (ld ldr) from column r0 */
static double rel_diff2(const float *a, int lda, const float *r, int ldr, int r0, int rows,
                        int cols) {
  double m = 0.0, d = 0.0;
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++) {
      const double rv = r[(size_t)i * ldr + r0 + j], av = a[(size_t)i * lda + j];
      m = fmax(m, fabs(rv));
      d = fmax(d, fabs(av - rv));
    }
  return m > 0 ? d / m : d;
}

typedef CUresult (*EncodeTiled)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* a 2D map of a row-major (rows x cols) matrix of esize-byte elements, boxes (bc x br) */
static CUtensorMap map2d(EncodeTiled enc, void *p, CUtensorMapDataType ty, int esize,
                         uint64_t rows, uint64_t cols, uint32_t br, uint32_t bc,
                         CUtensorMapSwizzle sw) {
  CUtensorMap m;
  const cuuint64_t dim[2] = {cols, rows}, stride[1] = {cols * esize};
  const cuuint32_t box[2] = {bc, br}, es[2] = {1, 1};
  const CUresult r = enc(&m, ty, 2, p, dim, stride, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
                         CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "cuTensorMapEncodeTiled: error %d\n", (int)r);
    exit(1);
  }
  return m;
}

struct Layer {
  uint16_t *w, *wx;
  float *state;
  CUtensorMap tw, twx, tst;
};

/* pdl: launched programmatically (it may start once the kernel before let its dependents go) */
template <int STAGES, bool FUSED, class SH = InProj>
static void launch_maps(cudaStream_t st, const CUtensorMap &tw, const CUtensorMap &tx,
                        const CUtensorMap &tst, const CUtensorMap &twx, const Args &a, bool pdl) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(SH::N / TN, SH::SPLIT);
  cfg.blockDim = dim3(THREADS);
  cfg.dynamicSmemBytes = Smem<STAGES>::BYTES;
  cfg.stream = st;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, k_inproj<STAGES, FUSED, SH>, tw, tx, tst, twx, a));
}
/* in_proj, plain or fused, with layer l's maps */
template <int STAGES, bool FUSED>
static void launch(cudaStream_t st, const Layer &l, const CUtensorMap &tx, const Args &a,
                   bool pdl = false) {
  launch_maps<STAGES, FUSED>(st, l.tw, tx, l.tst, l.twx, a, pdl);
}

template <int STAGES, bool FUSED, class SH = InProj>
static bool prepare(int sms) {
  CK(cudaFuncSetAttribute(k_inproj<STAGES, FUSED, SH>,
                          cudaFuncAttributeMaxDynamicSharedMemorySize, Smem<STAGES>::BYTES));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_inproj<STAGES, FUSED, SH>, THREADS,
                                                   Smem<STAGES>::BYTES));
  if (FUSED && per_sm * sms < NI / TN) { /* the x half's barrier needs every CTA resident */
    printf("%d stages: %d CTAs an SM on %d SMs cannot hold the %d CTAs; not run\n", STAGES, per_sm,
           sms, NI / TN);
    return false;
  }
  if (per_sm < 1) {
    printf("%d stages: no CTA fits an SM; not run\n", STAGES);
    return false;
  }
  return true;
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("fused_inproj_probe: %s, %d SMs; 64 sequences, in_proj %d -> %d, conv %d, "
         "x_proj %d -> %d\n",
         prop.name, prop.multiProcessorCount, DM, NI, KC, DI, XO);
  if (prop.major < 9) {
    printf("needs sm_90 (tensor copies)\n");
    return 1;
  }
  EncodeTiled enc = nullptr;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&enc, 12000,
                                      cudaEnableDefault, &q));
  if (!enc || q != cudaDriverEntryPointSuccess) {
    printf("cuTensorMapEncodeTiled not found\n");
    return 1;
  }
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cublasHandle_t hb = cublas_for(st);
  const double copy_tbs = copy_rate(st);

  Layer L[LAYERS];
  for (int l = 0; l < LAYERS; l++) {
    CK(cudaMalloc(&L[l].w, (size_t)NI * DM * 2));
    CK(cudaMalloc(&L[l].wx, (size_t)XO * DI * 2));
    CK(cudaMalloc(&L[l].state, (size_t)MB * DI * (KC - 1) * 4));
    k_fill<<<1024, 256, 0, st>>>(L[l].w, (size_t)NI * DM, 1234u + l, 0x3c80); /* [1/64, 1/32) */
    k_fill<<<256, 256, 0, st>>>(L[l].wx, (size_t)XO * DI, 777u + l, 0x3c00);  /* [1/128, 1/64) */
    k_fill_f32<<<256, 256, 0, st>>>(L[l].state, (size_t)MB * DI * (KC - 1), 55u + l, 1.f);
    L[l].tw = map2d(enc, L[l].w, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, NI, DM, TN, TK,
                    CU_TENSOR_MAP_SWIZZLE_128B);
    L[l].twx = map2d(enc, L[l].wx, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, XO, DI, XO, TK,
                     CU_TENSOR_MAP_SWIZZLE_128B);
    L[l].tst = map2d(enc, L[l].state, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, MB, (size_t)DI * (KC - 1),
                     MB, ST_ROW, CU_TENSOR_MAP_SWIZZLE_NONE);
  }
  uint16_t *x, *ub;
  float *cw, *cb, *y, *z, *xc, *part, *dbl, *xz_ref, *u_ref, *st_ref, *st0, *dbl_ref;
  unsigned *bar;
  CK(cudaMalloc(&x, (size_t)MB * DM * 2));
  CK(cudaMalloc(&ub, (size_t)MB * DI * 2));
  CK(cudaMalloc(&cw, (size_t)DI * KC * 4));
  CK(cudaMalloc(&cb, (size_t)DI * 4));
  CK(cudaMalloc(&y, (size_t)MB * NI * 4));
  CK(cudaMalloc(&z, (size_t)MB * DI * 4));
  CK(cudaMalloc(&xc, (size_t)MB * DI * 4));
  CK(cudaMalloc(&part, (size_t)NXC * MB * XO * 4));
  CK(cudaMalloc(&dbl, (size_t)MB * XO * 4));
  CK(cudaMalloc(&xz_ref, (size_t)MB * NI * 4));
  CK(cudaMalloc(&u_ref, (size_t)MB * DI * 4));
  CK(cudaMalloc(&st_ref, (size_t)MB * DI * (KC - 1) * 4));
  CK(cudaMalloc(&st0, (size_t)MB * DI * (KC - 1) * 4));
  CK(cudaMalloc(&dbl_ref, (size_t)MB * XO * 4));
  CK(cudaMalloc(&bar, 2 * sizeof(unsigned)));
  CK(cudaMemsetAsync(bar, 0, 2 * sizeof(unsigned), st));
  k_fill<<<256, 256, 0, st>>>(x, (size_t)MB * DM, 99u, 0x3f00); /* [0.5, 1) */
  k_fill_f32<<<64, 256, 0, st>>>(cw, (size_t)DI * KC, 3u, 0.5f);
  k_fill_f32<<<16, 256, 0, st>>>(cb, DI, 4u, 0.25f);
  const CUtensorMap tx = map2d(enc, x, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, MB, DM, MB, TK,
                               CU_TENSOR_MAP_SWIZZLE_128B);
  /* the kernel before in_proj in a step (the chains below): out_proj's parts and the residual */
  float *parts, *resid, *resid_out;
  CK(cudaMalloc(&parts, (size_t)4 * MB * DM * 4));
  CK(cudaMalloc(&resid, (size_t)MB * DM * 4));
  CK(cudaMalloc(&resid_out, (size_t)MB * DM * 4));
  k_fill_f32<<<256, 256, 0, st>>>(parts, (size_t)4 * MB * DM, 5u, 0.1f);
  k_fill_f32<<<256, 256, 0, st>>>(resid, (size_t)MB * DM, 6u, 1.f);
  const auto norm = [&](unsigned long long *stamps = nullptr) {
    k_norm_like<<<MB, NORM_T, 0, st>>>(parts, resid, resid_out, x, stamps);
  };
  CK(cudaMemcpyAsync(st0, L[0].state, (size_t)MB * DI * (KC - 1) * 4, cudaMemcpyDeviceToDevice,
                     st));
  const size_t nh = (size_t)MB * NI, ns = (size_t)MB * DI * (KC - 1);
  /* h: a result (the largest: the conv states), hr: in_proj's reference rows, hs: the others */
  float *h = (float *)malloc(ns * 4), *hr = (float *)malloc(nh * 4), *hs = (float *)malloc(ns * 4);
  const auto fetch = [&](float *dst, const float *src, size_t n) {
    CK(cudaMemcpy(dst, src, n * 4, cudaMemcpyDeviceToHost));
  };
  /* the references from x as it is now, layer 0's weights and the states kept in st0 (the fused
   * kernel rewrites layer 0's) */
  const auto make_refs = [&] {
    k_ref<<<dim3((NI + 127) / 128, MB), 128, 0, st>>>(x, DM, L[0].w, NI, DM, xz_ref);
    k_conv_ref<<<dim3((DI + 127) / 128, MB), 128, 0, st>>>(xz_ref, cw, cb, st0, u_ref, st_ref, ub);
    k_ref<<<dim3((XO + 127) / 128, MB), 128, 0, st>>>(ub, DI, L[0].wx, XO, DI, dbl_ref);
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    fetch(hr, xz_ref, nh);
  };
  make_refs();
  bool ok = true;
  const auto report = [&](const char *what, double e, double tol) {
    printf("  %-40s rel. diff %.1e %s\n", what, e, e < tol ? "ok" : "FAILED");
    ok = ok && e < tol;
  };
  const double wbytes = (double)NI * DM * 2;
  const auto rate = [&](double us) { return wbytes / (us * 1e-6) / 1e12; };

  /* 1. cuBLAS, as the library calls it: y^T (NI x 64) = W (row-major NI x DM, op T) x^T */
  const float one = 1.f, zero = 0.f;
  const auto gemm = [&](const uint16_t *wl) {
    BK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, NI, MB, DM, &one, wl, CUDA_R_16BF, DM, x,
                    CUDA_R_16BF, DM, &zero, y, CUDA_R_32F, NI, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
  };
  printf("each alone (checked on layer 0 against fp32 reference kernels, then a graph of %d calls "
         "over %d weight copies, us a call):\n",
         LAYERS, LAYERS);
  gemm(L[0].w);
  CK(cudaStreamSynchronize(st));
  fetch(h, y, nh);
  report("cuBLAS in_proj", rel_diff2(h, NI, hr, NI, 0, MB, NI), 1e-4);
  const double us_blas = time_graph(st, 20, [&] {
                           for (int l = 0; l < LAYERS; l++) gemm(L[l].w);
                         }) / LAYERS;
  printf("  = %7.2f us, weights at %.2f TB/s (%.2f of the copy rate)\n", us_blas, rate(us_blas),
         rate(us_blas) / copy_tbs);
  const auto row = [&](double us) {
    printf("  = %7.2f us, weights at %.2f TB/s (%.2f), %+.2f us against cuBLAS's in_proj\n", us,
           rate(us), rate(us) / copy_tbs, us - us_blas);
  };

  Args a = {y, cw, cb, nullptr, xc, part, dbl, bar, nullptr};
  /* the fused kernel's outputs on layer 0 against the references */
  const auto check_fused = [&](const char *label) {
    char what[96];
    snprintf(what, sizeof what, "%s: z", label);
    fetch(h, z, (size_t)MB * DI);
    report(what, rel_diff2(h, DI, hr, NI, DI, MB, DI), 1e-4);
    fetch(h, xc, (size_t)MB * DI);
    fetch(hs, u_ref, (size_t)MB * DI);
    report("  ... u (the conv's outputs)", rel_diff2(h, DI, hs, DI, 0, MB, DI), 1e-4);
    fetch(h, L[0].state, ns);
    fetch(hs, st_ref, ns);
    report("  ... the conv states",
           rel_diff2(h, DI * (KC - 1), hs, DI * (KC - 1), 0, MB, DI * (KC - 1)), 1e-4);
    fetch(h, dbl, (size_t)MB * XO);
    fetch(hs, dbl_ref, (size_t)MB * XO);
    /* u is rounded to bf16 on both sides from fp32 values that differ in their last bits (the
     * sums' order), so a value near a bf16 midpoint may round the other way (~3e-6 each) */
    report("  ... x_proj (dt, B, C)", rel_diff2(h, XO, hs, XO, 0, MB, XO), 1e-3);
  };
  const auto fused_args = [&](int l) {
    Args p = a;
    p.y = z;
    p.state = L[l].state;
    return p;
  };
  const auto reset_state0 = [&] {
    CK(cudaMemcpyAsync(L[0].state, st0, ns * 4, cudaMemcpyDeviceToDevice, st));
  };
  bool fits[2][2] = {{false, false}, {false, false}}; /* [plain, fused][6, 8 stages] */
  const auto alone = [&](auto stages_tag, auto fused_tag) {
    constexpr int S = decltype(stages_tag)::value;
    constexpr bool F = decltype(fused_tag)::value;
    char what[96];
    snprintf(what, sizeof what, "%s, tensor copies, %d stages", F ? "fused" : "in_proj", S);
    if (!prepare<S, F>(prop.multiProcessorCount)) return;
    fits[F][S == 8] = true;
    if (F) {
      reset_state0();
      launch<S, true>(st, L[0], tx, fused_args(0));
    } else {
      CK(cudaMemsetAsync(y, 0, nh * 4, st));
      launch<S, false>(st, L[0], tx, a);
    }
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(st));
    if (F) {
      check_fused(what);
    } else {
      fetch(h, y, nh);
      report(what, rel_diff2(h, NI, hr, NI, 0, MB, NI), 1e-4);
    }
    row(time_graph(st, 20, [&] {
          for (int l = 0; l < LAYERS; l++)
            launch<S, F>(st, L[l], tx, F ? fused_args(l) : a);
        }) / LAYERS);
  };
  using S6 = std::integral_constant<int, 6>;
  using S8 = std::integral_constant<int, 8>;
  using Plain = std::false_type;
  using Fused = std::true_type;
  alone(S6{}, Plain{});
  alone(S8{}, Plain{});
  alone(S6{}, Fused{});
  alone(S8{}, Fused{});

  /* 2. behind the norm, a layer = the norm, then in_proj (and the fused epilogue) */
  printf("behind the norm (out_proj's 4 parts + the residual, LayerNorm into x's bf16 rows), us a "
         "layer:\n");
  const double us_norm = time_graph(st, 20, [&] {
                           for (int l = 0; l < LAYERS; l++) norm();
                         }) / LAYERS;
  printf("  the norm alone                              %7.2f\n", us_norm);
  const double us_nb = time_graph(st, 20, [&] {
                         for (int l = 0; l < LAYERS; l++) norm(), gemm(L[l].w);
                       }) / LAYERS;
  printf("  the norm, then cuBLAS's in_proj             %7.2f (%.2f beyond the norm)\n", us_nb,
         us_nb - us_norm);
  const auto chain = [&](auto stages_tag, auto fused_tag, bool pdl) {
    constexpr int S = decltype(stages_tag)::value;
    constexpr bool F = decltype(fused_tag)::value;
    if (!fits[F][S == 8]) return;
    const double us = time_graph(st, 20, [&] {
                        for (int l = 0; l < LAYERS; l++) {
                          norm();
                          launch<S, F>(st, L[l], tx, F ? fused_args(l) : a, pdl);
                        }
                      }) / LAYERS;
    printf("  the norm, then %-7s %d stages%-14s %7.2f (%+.2f against the norm and cuBLAS)\n",
           F ? "fused" : "in_proj", S, pdl ? ", early start" : "", us, us - us_nb);
  };
  chain(S6{}, Plain{}, false);
  chain(S6{}, Plain{}, true);
  chain(S8{}, Plain{}, true);
  chain(S6{}, Fused{}, false);
  chain(S6{}, Fused{}, true);
  chain(S8{}, Fused{}, false);
  chain(S8{}, Fused{}, true);
  /* the early start's order checked: x is the norm's output, read after the wait */
  norm();
  CK(cudaStreamSynchronize(st));
  make_refs();
  for (int S8f = 0; S8f < 2; S8f++) {
    if (!fits[1][S8f]) continue;
    reset_state0();
    /* x scrambled first, so that a read of it before the norm rewrote it would show */
    k_fill<<<256, 256, 0, st>>>(x, (size_t)MB * DM, 1000u + S8f, 0x3f00);
    norm();
    if (S8f) launch<8, true>(st, L[0], tx, fused_args(0), true);
    else launch<6, true>(st, L[0], tx, fused_args(0), true);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(st));
    check_fused(S8f ? "behind the norm, early start, 8 stages"
                    : "behind the norm, early start, 6 stages");
  }
  /* where the fused kernel's time goes behind the norm: one replay of a graph of the 48 pairs
   * with stamps (the early start, 8 stages where they fit), medians over the layers, us from the
   * norm's start */
  const int SI = fits[1][1] ? 1 : fits[1][0] ? 0 : -1;
  if (SI >= 0) {
    unsigned long long *dst;
    CK(cudaMalloc(&dst, (size_t)LAYERS * NSTAMPS * 8));
    CK(cudaMemsetAsync(dst, 0, (size_t)LAYERS * NSTAMPS * 8, st));
    cudaGraph_t gr;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int l = 0; l < LAYERS; l++) {
      Args pl = fused_args(l);
      pl.stamps = dst + (size_t)l * NSTAMPS;
      norm(pl.stamps);
      if (SI) launch<8, true>(st, L[l], tx, pl, true);
      else launch<6, true>(st, L[l], tx, pl, true);
    }
    CK(cudaStreamEndCapture(st, &gr));
    CK(cudaGraphInstantiate(&ge, gr, 0));
    for (int r = 0; r < 3; r++) CK(cudaGraphLaunch(ge, st)); /* the last replay's stamps stay */
    CK(cudaStreamSynchronize(st));
    unsigned long long hst[LAYERS][NSTAMPS];
    CK(cudaMemcpy(hst, dst, sizeof hst, cudaMemcpyDeviceToHost));
    static const char *names[NSTAMPS] = {
        "the norm starts", "the norm's block 0 ends", "in_proj's CTA 0 starts",
        "its producer passes the wait", "its product is done", "its tile staged",
        "the conv states and the slice in", "the conv step done", "x_proj's partials staged",
        "the partials stored", "the barrier passed", "the reduction done (CTA 0 ends)",
        "a z CTA ends"};
    printf("the fused kernel behind the norm, early start, %d stages (median of %d layers, us "
           "from the norm's start):\n",
           SI ? 8 : 6, LAYERS);
    for (int i = 1; i < NSTAMPS; i++) {
      double v[LAYERS];
      for (int l = 0; l < LAYERS; l++)
        v[l] = ((double)hst[l][i] - (double)hst[l][NORM_START]) * 1e-3;
      std::sort(v, v + LAYERS);
      printf("  %-36s %8.2f\n", names[i], v[LAYERS / 2]);
    }
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(gr));
    CK(cudaFree(dst));
  }
  /* 3. out_proj (64 x 3,584 -> 1,792 in 4 parts over its inputs, left unsummed) behind the state
   * update: cuBLAS's strided batch, as the library runs it, against ours with and without the
   * early start (its first weight stages while the update streams the states) */
  {
    const size_t nwo = (size_t)DM * DI, nst = (size_t)MB * DI * NSTATE, nop = (size_t)4 * MB * DM;
    uint16_t *wo[LAYERS], *yb;
    float *ust[LAYERS], *op, *op_ref;
    CUtensorMap two[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
      CK(cudaMalloc(&wo[l], nwo * 2));
      CK(cudaMalloc(&ust[l], nst * 4));
      k_fill<<<1024, 256, 0, st>>>(wo[l], nwo, 4321u + l, 0x3c80);
      k_fill_f32<<<1024, 256, 0, st>>>(ust[l], nst, 77u + l, 1.f);
      two[l] = map2d(enc, wo[l], CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, DM, DI, TN, TK,
                     CU_TENSOR_MAP_SWIZZLE_128B);
    }
    CK(cudaMalloc(&yb, (size_t)MB * DI * 2));
    CK(cudaMalloc(&op, nop * 4));
    CK(cudaMalloc(&op_ref, (size_t)MB * DM * 4));
    k_fill<<<256, 256, 0, st>>>(yb, (size_t)MB * DI, 98u, 0x3f00);
    const CUtensorMap tyo = map2d(enc, yb, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, MB, DI, MB, TK,
                                  CU_TENSOR_MAP_SWIZZLE_128B);
    k_ref<<<dim3((DM + 127) / 128, MB), 128, 0, st>>>(yb, DI, wo[0], DM, DI, op_ref);
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    fetch(hr, op_ref, (size_t)MB * DM);
    const auto parts_summed = [&] { /* the 4 parts' sum on the host, into h */
      fetch(hs, op, nop);
      for (size_t i = 0; i < (size_t)MB * DM; i++)
        h[i] = ((hs[i] + hs[i + MB * DM]) + hs[i + 2 * MB * DM]) + hs[i + 3 * MB * DM];
    };
    const auto blas_out = [&](const uint16_t *w) {
      BK(cublasGemmStridedBatchedEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, DM, MB, DI / 4, &one, w,
                                    CUDA_R_16BF, DI, DI / 4, yb, CUDA_R_16BF, DI, DI / 4, &zero,
                                    op, CUDA_R_32F, DM, (long long)MB * DM, 4, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
    };
    const double wob = (double)nwo * 2;
    printf("out_proj (64 x %d -> %d, 4 parts) alone, us a call:\n", DI, DM);
    blas_out(wo[0]);
    CK(cudaStreamSynchronize(st));
    parts_summed();
    report("cuBLAS out_proj (strided batch)", rel_diff2(h, DM, hr, DM, 0, MB, DM), 1e-4);
    const double us_bo = time_graph(st, 20, [&] {
                           for (int l = 0; l < LAYERS; l++) blas_out(wo[l]);
                         }) / LAYERS;
    printf("  = %7.2f us, weights at %.2f TB/s (%.2f of the copy rate)\n", us_bo,
           wob / (us_bo * 1e-6) / 1e12, wob / (us_bo * 1e-6) / 1e12 / copy_tbs);
    Args ao = a;
    ao.y = op;
    bool ofits[2] = {false, false};
    const auto out_alone = [&](auto stages_tag) {
      constexpr int S = decltype(stages_tag)::value;
      if (!prepare<S, false, OutProj>(prop.multiProcessorCount)) return;
      ofits[S == 8] = true;
      CK(cudaMemsetAsync(op, 0, nop * 4, st));
      launch_maps<S, false, OutProj>(st, two[0], tyo, two[0], two[0], ao, false);
      CK(cudaGetLastError());
      CK(cudaStreamSynchronize(st));
      parts_summed();
      char what[64];
      snprintf(what, sizeof what, "out_proj, tensor copies, %d stages", S);
      report(what, rel_diff2(h, DM, hr, DM, 0, MB, DM), 1e-4);
      const double us = time_graph(st, 20, [&] {
                          for (int l = 0; l < LAYERS; l++)
                            launch_maps<S, false, OutProj>(st, two[l], tyo, two[l], two[l], ao,
                                                           false);
                        }) / LAYERS;
      printf("  = %7.2f us, weights at %.2f TB/s (%.2f), %+.2f us against cuBLAS's\n", us,
             wob / (us * 1e-6) / 1e12, wob / (us * 1e-6) / 1e12 / copy_tbs, us - us_bo);
    };
    out_alone(S6{});
    out_alone(S8{});
    const auto update = [&](int l) {
      k_update_like<<<(MB * DI + 255) / 256, 256, 0, st>>>(ust[l], yb);
    };
    printf("behind the state update (29 MB of states read and written, y's bf16 rows), us a "
           "layer:\n");
    const double us_up = time_graph(st, 20, [&] {
                           for (int l = 0; l < LAYERS; l++) update(l);
                         }) / LAYERS;
    printf("  the update alone                            %7.2f\n", us_up);
    const double us_ub = time_graph(st, 20, [&] {
                           for (int l = 0; l < LAYERS; l++) update(l), blas_out(wo[l]);
                         }) / LAYERS;
    printf("  the update, then cuBLAS's out_proj          %7.2f (%.2f beyond the update)\n", us_ub,
           us_ub - us_up);
    const auto out_chain = [&](auto stages_tag, bool pdl) {
      constexpr int S = decltype(stages_tag)::value;
      if (!ofits[S == 8]) return;
      const double us = time_graph(st, 20, [&] {
                          for (int l = 0; l < LAYERS; l++) {
                            update(l);
                            launch_maps<S, false, OutProj>(st, two[l], tyo, two[l], two[l], ao,
                                                           pdl);
                          }
                        }) / LAYERS;
      printf("  the update, then out_proj %d stages%-14s %7.2f (%+.2f against the update and "
             "cuBLAS)\n",
             S, pdl ? ", early start" : "", us, us - us_ub);
    };
    out_chain(S6{}, false);
    out_chain(S6{}, true);
    out_chain(S8{}, false);
    out_chain(S8{}, true);
    /* the early start's order checked: y is the update's output, read after the wait */
    for (int si = 0; si < 2; si++) {
      if (!ofits[si]) continue;
      update(0);
      if (si) launch_maps<8, false, OutProj>(st, two[0], tyo, two[0], two[0], ao, true);
      else launch_maps<6, false, OutProj>(st, two[0], tyo, two[0], two[0], ao, true);
      CK(cudaGetLastError());
      CK(cudaStreamSynchronize(st));
      /* the reference from the y that update wrote (nothing has written it since) */
      k_ref<<<dim3((DM + 127) / 128, MB), 128, 0, st>>>(yb, DI, wo[0], DM, DI, op_ref);
      CK(cudaStreamSynchronize(st));
      fetch(hr, op_ref, (size_t)MB * DM);
      parts_summed();
      report(si ? "out_proj behind the update, early, 8 st."
                : "out_proj behind the update, early, 6 st.",
             rel_diff2(h, DM, hr, DM, 0, MB, DM), 1e-4);
    }
    for (int l = 0; l < LAYERS; l++) {
      CK(cudaFree(wo[l]));
      CK(cudaFree(ust[l]));
    }
    CK(cudaFree(yb));
    CK(cudaFree(op));
    CK(cudaFree(op_ref));
  }
  printf("the fused form gains where its chain's excess over the norm and cuBLAS is below "
         "k_conv_linear's exposed time in the step (cuda_bench --timeline 64)\n");
  printf("%s\n", ok ? "all checks ok" : "CHECKS FAILED");
  return ok ? 0 : 1;
}
