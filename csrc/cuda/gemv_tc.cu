/*
 * gemv_tc.cu — mb_linear for bf16 weights and 8 < n <= 256 rows on the bf16 tensor cores
 * (mma.sync m16n8k16, fp32 accumulation): the skinny products of batched decoding (in_proj,
 * x_proj, out_proj at batch 9..256), where cuBLAS spends 12-13 us on x_proj's 1 MB (issue 13).
 *
 * y[r, o] = sum_k x[r, k] w[o, k] + bias[o]: the MMA's M is the output features (the weight tile
 * is the A operand, row-major as stored), N the rows of x, K the input features.
 *
 * - A warp owns 16 weight rows (one m-tile) and NT n-tiles of 8 rows of x (NT * 8 <= 64; larger n
 *   runs in chunks of 64 rows over grid.z). Its weight fragments come straight from global
 *   memory, 2 x 16 bytes per row per 64 columns (a lane reads 32 contiguous bytes; the 4 lanes of a
 *   row a full 128-byte line), streamed (ld.global.cs), the next step's fragments loaded while the
 *   current step's MMAs run; the first step's before the PDL wait (weights are constant).
 * - The K order inside a 64-column step is permuted (lane t's 16 columns feed the MMA's k pairs
 *   2t, 2t+8 of four k16 steps); A and B use the same permutation, so the product is the same sum
 *   in another order (fp32 accumulation as cuBLAS; not the GEMV's bits).
 * - A block has 8 warps: WM m-tiles x WK k-groups (WM * WK = 8). x is read from global memory
 *   once per block and step: fp32 -> bf16 (round to nearest even, as the cuBLAS path's
 *   conversion) into shared memory in fragment order (one 16-byte load per lane per half-step,
 *   no bank conflicts). The WK k-groups' partial sums are added in shared memory in k-group order.
 * - Split-K over S blocks (grid.y) when the weights have few rows (x_proj: 144, out_proj: 1792):
 *   each block writes its fragment-ordered partial into scratch, the last block of an output
 *   tile (an atomic counter in context memory, reset by that block, so graphs replay) sums the S
 *   partials in split order (deterministic: the same bits whichever block ends last) and adds
 *   the bias.
 *
 * fp32 weights never come here (strict fp32 stays on cuBLAS, TF32 only with MB_FLAG_ALLOW_TF32).
 * MAMBABYTE_CUDA_DECODE_BATCH=old: cuBLAS for every n > 8, as before. MAMBABYTE_CUDA_TC_WM (1, 2,
 * 4, 8) and MAMBABYTE_CUDA_TC_SPLIT (1..16) override the heuristic (read per call; tuning only).
 */
#include <stdint.h>
#include <stdlib.h>

#include "cuda_internal.cuh"

#define TC_WARPS 8
#define TC_THREADS (TC_WARPS * 32)
#define TC_KSTEP 64
#define TC_MAX_SPLIT 16
/* counters of the last-block pattern: mbcuda_state.done[TC_DONE_OFF ..] (done[0] is mb_sample's) */
#define TC_DONE_OFF 64
#define TC_DONE_N ((MBCUDA_DONE_BYTES / 4) - TC_DONE_OFF)

struct TcArgs {
  const float *x; int64_t ldx;
  const uint16_t *w; const float *bias;
  int n, K, O;          /* rows of x, in_f, out_f */
  float *y; int64_t ldy;
  int WM, WK, S;        /* block shape and split */
  int rounds;           /* rounds of WK steps over all of K */
  int xvec;             /* x rows 16-byte aligned with ldx % 4 == 0 */
  float4 *part;         /* split partials (S > 1) */
  unsigned int *done;   /* per (m-block, n-chunk) counters (S > 1) */
};

__device__ __forceinline__ uint4 tc_ldw(const uint16_t *p) {
  uint4 v;
  asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/* two fp32 -> packed bf16x2, round to nearest even (lo in the low half) */
__device__ __forceinline__ uint32_t tc_pack(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ void tc_mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                       uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* The warp's weight fragments of one 64-column step: rows r (lane g) and r + 8, 16 columns from
 * 16 t. Rows past O and columns past K read as 0 (K % 8 == 0, so a 16-byte unit is all in or
 * all out). */
struct WFrag { uint4 a0, a1, b0, b1; };

__device__ __forceinline__ WFrag tc_load_w(const TcArgs &a, int row0, int step) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int col = step * TC_KSTEP + 16 * t;
  WFrag f;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  const int r1 = row0 + g, r2 = row0 + g + 8;
  const bool c0 = step >= 0 && col < a.K, c1 = step >= 0 && col + 8 < a.K;
  const uint16_t *p1 = a.w + (int64_t)r1 * a.K + col, *p2 = a.w + (int64_t)r2 * a.K + col;
  f.a0 = (r1 < a.O && c0) ? tc_ldw(p1) : zero;
  f.a1 = (r1 < a.O && c1) ? tc_ldw(p1 + 8) : zero;
  f.b0 = (r2 < a.O && c0) ? tc_ldw(p2) : zero;
  f.b1 = (r2 < a.O && c1) ? tc_ldw(p2 + 8) : zero;
  return f;
}

template <int NT>
__global__ void __launch_bounds__(TC_THREADS) k_linear_tc(TcArgs a) {
  extern __shared__ __align__(16) uint4 smem_tc[];
  mb_pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = warp % a.WM, kg = warp / a.WM;
  const int mblk = blockIdx.x, split = blockIdx.y, nchunk = blockIdx.z;
  const int row0 = (mblk * a.WM + wm) * 16;
  const int n0 = nchunk * 64;
  const int r_begin = (int)((int64_t)split * a.rounds / a.S);
  const int r_end = (int)((int64_t)(split + 1) * a.rounds / a.S);
  const int nsteps = (a.K + TC_KSTEP - 1) / TC_KSTEP;

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  auto step_of = [&](int r) { int s = r * a.WK + kg; return s < nsteps ? s : -1; };
  WFrag cur = tc_load_w(a, row0, r_begin < r_end ? step_of(r_begin) : -1);
  mb_pdl_wait();

  for (int r = r_begin; r < r_end; r++) {
    /* x tile of this round: rows n0 .. n0 + 8 NT, columns of the WK steps, as bf16 fragments:
     * uint4 index ((kgi * NT + j) * 2 + p) * 32 + (g * 4 + t) = x[n0 + 8 j + g][64 s + 16 t + 8 p ..] */
    __syncthreads(); /* the previous round's fragments are consumed */
    const int units = a.WK * NT * 64;
    for (int e = threadIdx.x; e < units; e += TC_THREADS) {
      const int c8 = e & 7, rr = (e >> 3) % (NT * 8), kgi = (e >> 3) / (NT * 8);
      const int s = r * a.WK + kgi;
      const int row = n0 + rr, col = s * TC_KSTEP + c8 * 8;
      float v[8];
      if (row < a.n && s < nsteps && col < a.K) {
        const float *px = a.x + (int64_t)row * a.ldx + col;
        if (a.xvec) {
          float4 q0 = __ldg((const float4 *)px), q1 = __ldg((const float4 *)px + 1);
          v[0] = q0.x; v[1] = q0.y; v[2] = q0.z; v[3] = q0.w;
          v[4] = q1.x; v[5] = q1.y; v[6] = q1.z; v[7] = q1.w;
        } else {
#pragma unroll
          for (int i = 0; i < 8; i++) v[i] = __ldg(px + i);
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = 0.f;
      }
      const int j = rr >> 3, g = rr & 7, t = c8 >> 1, p = c8 & 1;
      smem_tc[((kgi * NT + j) * 2 + p) * 32 + g * 4 + t] =
          make_uint4(tc_pack(v[0], v[1]), tc_pack(v[2], v[3]), tc_pack(v[4], v[5]), tc_pack(v[6], v[7]));
    }
    __syncthreads();
    const WFrag nxt = tc_load_w(a, row0, r + 1 < r_end ? step_of(r + 1) : -1);
    const uint4 *xf = smem_tc + kg * NT * 64 + lane;
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const uint4 p0 = xf[j * 64], p1 = xf[j * 64 + 32];
      tc_mma(acc[j], cur.a0.x, cur.b0.x, cur.a0.y, cur.b0.y, p0.x, p0.y);
      tc_mma(acc[j], cur.a0.z, cur.b0.z, cur.a0.w, cur.b0.w, p0.z, p0.w);
      tc_mma(acc[j], cur.a1.x, cur.b1.x, cur.a1.y, cur.b1.y, p1.x, p1.y);
      tc_mma(acc[j], cur.a1.z, cur.b1.z, cur.a1.w, cur.b1.w, p1.z, p1.w);
    }
    cur = nxt;
  }

  /* k-groups: add in k-group order through shared memory (float4 per lane and n-tile) */
  float4 *red = (float4 *)smem_tc;
  if (a.WK > 1) {
    __syncthreads();
    if (kg > 0) {
#pragma unroll
      for (int j = 0; j < NT; j++)
        red[((kg - 1) * a.WM + wm) * NT * 32 + j * 32 + lane] =
            make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
    }
    __syncthreads();
    if (kg == 0) {
      for (int q = 1; q < a.WK; q++) {
#pragma unroll
        for (int j = 0; j < NT; j++) {
          const float4 o = red[((q - 1) * a.WM + wm) * NT * 32 + j * 32 + lane];
          acc[j][0] += o.x; acc[j][1] += o.y; acc[j][2] += o.z; acc[j][3] += o.w;
        }
      }
    }
  }

  if (a.S > 1) {
    /* partial of this split, fragment order: [split][mblk][nchunk][wm][j][lane] */
    const int64_t tile = ((int64_t)mblk * gridDim.z + nchunk) * a.WM + wm;
    if (kg == 0) {
#pragma unroll
      for (int j = 0; j < NT; j++)
        a.part[((int64_t)split * gridDim.x * gridDim.z * a.WM + tile) * NT * 32 + j * 32 + lane] =
            make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
    }
    __threadfence();
    __syncthreads();
    __shared__ int last;
    if (threadIdx.x == 0) {
      unsigned int *cnt = a.done + (int64_t)mblk * gridDim.z + nchunk;
      const unsigned int prev = atomicAdd(cnt, 1u);
      last = prev == (unsigned)a.S - 1;
      if (last) *cnt = 0; /* every split has arrived: ready for the next call or replay */
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (kg != 0) return;
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    for (int s = 0; s < a.S; s++) {
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const float4 o = __ldcg(a.part + ((int64_t)s * gridDim.x * gridDim.z * a.WM + tile) * NT * 32 + j * 32 + lane);
        acc[j][0] += o.x; acc[j][1] += o.y; acc[j][2] += o.z; acc[j][3] += o.w;
      }
    }
  } else if (kg != 0) {
    return;
  }

  /* C fragment: acc[j][0..1] = (out row0 + g, x rows n0 + 8 j + 2 t, +1); [2..3]: out row + 8 */
  const int g = lane >> 2, t = lane & 3;
  const int o1 = row0 + g, o2 = row0 + g + 8;
  const float b1 = (a.bias && o1 < a.O) ? a.bias[o1] : 0.f;
  const float b2 = (a.bias && o2 < a.O) ? a.bias[o2] : 0.f;
#pragma unroll
  for (int j = 0; j < NT; j++) {
    const int ra = n0 + j * 8 + 2 * t, rb = ra + 1;
    if (ra < a.n) {
      if (o1 < a.O) a.y[(int64_t)ra * a.ldy + o1] = acc[j][0] + b1;
      if (o2 < a.O) a.y[(int64_t)ra * a.ldy + o2] = acc[j][2] + b2;
    }
    if (rb < a.n) {
      if (o1 < a.O) a.y[(int64_t)rb * a.ldy + o1] = acc[j][1] + b1;
      if (o2 < a.O) a.y[(int64_t)rb * a.ldy + o2] = acc[j][3] + b2;
    }
  }
}

static int env_int(const char *e) { return e && *e ? atoi(e) : 0; }

/* Returns MBCUDA_NOT_HANDLED when the caller should keep cuBLAS (n outside 9..256, in_f not a
 * multiple of 8 or w not 16-byte aligned, sizes past int, MAMBABYTE_CUDA_DECODE_BATCH=old). */
int mbcuda_linear_tc(mb_ctx *ctx, const float *x, int64_t ldx, const uint16_t *w,
                     const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                     int64_t ldy) {
  if (n <= 8 || n > 256 || in_f % 8 != 0 || ((uintptr_t)w & 15) != 0 || in_f > (1 << 30) ||
      out_f > (1 << 30) || !mbcuda_decode_batch_enabled())
    return MBCUDA_NOT_HANDLED;
  mbcuda_state *st = mbcuda_st(ctx);
  const int NT = n <= 16 ? 2 : n <= 32 ? 4 : 8;
  const int nchunks = (int)((n + 63) / 64);
  const int mtiles = (int)((out_f + 15) / 16);
  /* WM: the most m-tiles per block (x read once per block) without wasting more than 1/8 */
  int WM = TC_WARPS;
  while (WM > 1 && ((mtiles + WM - 1) / WM * WM - mtiles) * 8 > mtiles) WM >>= 1;
  const int ewm = env_int(getenv("MAMBABYTE_CUDA_TC_WM"));
  if (ewm == 1 || ewm == 2 || ewm == 4 || ewm == 8) WM = ewm;
  const int WK = TC_WARPS / WM;
  const int mblocks = (mtiles + WM - 1) / WM;
  const int nsteps = (int)((in_f + TC_KSTEP - 1) / TC_KSTEP);
  const int rounds = (nsteps + WK - 1) / WK;
  /* split K until ~2 blocks per SM, at most 8 (the last block's sum reads S partials) */
  const int64_t blocks = (int64_t)mblocks * nchunks;
  int S = (int)((2 * st->sm_count + blocks - 1) / blocks);
  if (S > 8) S = 8;
  const int es = env_int(getenv("MAMBABYTE_CUDA_TC_SPLIT"));
  if (es >= 1 && es <= TC_MAX_SPLIT) S = es;
  if (S > rounds) S = rounds;
  if (S < 1) S = 1;
  if (blocks > TC_DONE_N) S = 1;
  if (mblocks > 0x7fffffff || nchunks > 65535) return MBCUDA_NOT_HANDLED;
  float4 *part = NULL;
  if (S > 1) {
    void *scr = NULL;
    const size_t bytes = (size_t)S * blocks * WM * NT * 32 * sizeof(float4);
    int rc = mbcuda_scratch(ctx, bytes, "linear (tensor-core split partials)", &scr);
    if (rc) return rc;
    part = (float4 *)scr;
  }
  const int xvec = (ldx % 4 == 0) && (((uintptr_t)x & 15) == 0);
  TcArgs a = {x, ldx, w, bias, (int)n, (int)in_f, (int)out_f, y, ldy, WM, WK, S, rounds, xvec,
              part, st->done + TC_DONE_OFF};
  const size_t xs_bytes = (size_t)WK * NT * 64 * sizeof(uint4);
  const size_t red_bytes = (size_t)(WK - 1) * WM * NT * 32 * sizeof(float4);
  const size_t smem = xs_bytes > red_bytes ? xs_bytes : red_bytes;
  dim3 grid((unsigned)mblocks, (unsigned)S, (unsigned)nchunks);
  switch (NT) {
    case 2: MBCUDA_LAUNCH("linear (tensor-core)", k_linear_tc<2>, grid, dim3(TC_THREADS), smem, a); break;
    case 4: MBCUDA_LAUNCH("linear (tensor-core)", k_linear_tc<4>, grid, dim3(TC_THREADS), smem, a); break;
    default:
      if (smem > 48 * 1024)
        MBCUDA_CHECK(cudaFuncSetAttribute(k_linear_tc<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "linear (tensor-core smem attribute)");
      MBCUDA_LAUNCH("linear (tensor-core)", k_linear_tc<8>, grid, dim3(TC_THREADS), smem, a);
      break;
  }
  return MB_OK;
}
