/*
 * step.cu — the fused decoding ops on CUDA: mb_selective_state_update_dt (dt_proj inside the state
 * update) and mb_selective_scan_dt (the same kernel over len positions). The CPU twins (csrc/cpu)
 * are the unfused pairs; csrc/tests/cuda_vs_cpu.c holds the two equal.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"
#include "ssu.cuh"

template <int L, typename WT, int TILE> /* TILE: 1 (decoding: a step's registers) or SSU_TILE */
__global__ void k_ssu_dt(SsuDtArgs a) {
  extern __shared__ __align__(16) float smem_ssu[];
  mb_pdl_trigger();
  ssu_dt_block<L, WT, TILE, XLoad::Generic>(a, blockIdx.x, blockIdx.y, blockDim.x, smem_ssu,
                                            [] { mb_pdl_wait(); });
}

/* ---- several positions of one sequence: a warp per position ----------------------------------- *
 * mb_selective_scan_dt over len > 1 positions (a verification pass) with k_ssu_dt runs every
 * position's work in the same two warps one after the other: ~500 instructions a position, at
 * one warp a scheduler (16 us for 8 positions of the 384 x 24 target's layer, against 3.7 for one,
 * Nsight Compute). Here a block is POS_W warps over the same CB = 32 / L channels: warp w takes
 * position t0 + w of each tile for what does not depend on the state (dt_proj's dot, softplus,
 * the decay exp2 and the input term), warp 0 runs the recurrence over the tile's positions (two
 * FMAs a position and lane), and warp w again the output of its position (the C reduction, D,
 * the gate, the stores). Every value is computed by the operations of k_ssu_dt in the same order
 * (the lanes' chunks, the butterflies, the FMAs), so the bits are the decoding step's. */
#define POS_W 8

template <int L, typename WT>
__global__ void __launch_bounds__(POS_W * 32) k_ssu_pos(SsuDtArgs a) {
  static_assert(SCAN_P == 2, "two states a lane (h0, h1 below)");
  __shared__ float s_ea[POS_W][32][SCAN_P], s_bu[POS_W][32][SCAN_P], s_h[POS_W][32][SCAN_P];
  mb_pdl_trigger();
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gi = lane % L, CB = 32 / L;
  const int64_t c = (int64_t)blockIdx.x * CB + lane / L, b = blockIdx.y;
  const bool cok = c < a.d;
  /* constants before the PDL wait */
  const SsuConsts<WT> cs = ssu_consts<L, WT>(a, c, cok, gi);
  float *st = a.state + (b * a.d + (cok ? c : 0)) * a.n;
  mb_pdl_wait();
  float h[SCAN_P] = {0.f, 0.f};
  if (w == 0) {
#pragma unroll
    for (int p = 0; p < SCAN_P; p++) {
      int s = gi * SCAN_P + p;
      h[p] = (cok && s < a.n) ? st[s] : 0.f;
    }
  }
  for (int64_t t0 = 0; t0 < a.len; t0 += POS_W) {
    const int tn = (int)min((int64_t)POS_W, a.len - t0);
    const bool mine = w < tn; /* this warp has a position in the tile */
    const int64_t r = b * a.len + t0 + (mine ? w : 0);
    /* phase 1, warp w: position t0 + w */
    float uu = 0.f, zz = 0.f, Bv[SCAN_P] = {0.f, 0.f}, Cv[SCAN_P] = {0.f, 0.f};
    if (mine) {
      if (cok) {
        uu = a.u[r * a.ldu + c];
        if (a.z) zz = a.z[r * a.ldz + c];
      }
#pragma unroll
      for (int p = 0; p < SCAN_P; p++) {
        int s = gi * SCAN_P + p;
        if (s < a.n) Bv[p] = a.Bm[r * a.ldb + s], Cv[p] = a.Cm[r * a.ldc + s];
      }
      const float draw = ssu_dt_dot<L, WT>(a, cs, gi, cok, a.xdbl + r * a.ldx) + cs.bc;
      if (gi == 0 && cok && a.delta_out) a.delta_out[r * a.d + c] = draw;
      const float dt = a.softplus ? mb_softplus(draw) : draw;
      const float du = dt * uu;
#pragma unroll
      for (int p = 0; p < SCAN_P; p++) {
        s_ea[w][lane][p] = exp2f(dt * cs.Ac[p]);
        s_bu[w][lane][p] = du * Bv[p];
      }
    }
    __syncthreads();
    /* the recurrence, warp 0: the tile's positions in order */
    if (w == 0) {
      float e[POS_W][SCAN_P], u[POS_W][SCAN_P];
#pragma unroll
      for (int t = 0; t < POS_W; t++)
#pragma unroll
        for (int p = 0; p < SCAN_P; p++)
          e[t][p] = t < tn ? s_ea[t][lane][p] : 0.f, u[t][p] = t < tn ? s_bu[t][lane][p] : 0.f;
#pragma unroll
      for (int t = 0; t < POS_W; t++) {
        if (t < tn) {
#pragma unroll
          for (int p = 0; p < SCAN_P; p++) {
            h[p] = fmaf(e[t][p], h[p], u[t][p]);
            s_h[t][lane][p] = h[p];
          }
        }
      }
    }
    __syncthreads();
    /* the output of position t0 + w */
    if (mine) {
      const float h0 = s_h[w][lane][0], h1 = s_h[w][lane][1];
      float yp = fmaf(Cv[1], h1, Cv[0] * h0);
#pragma unroll
      for (int o = L / 2; o > 0; o >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, o);
      if (cok) {
        if (a.states_all) {
          float *sa = a.states_all + (r * a.d + c) * a.n;
          if (gi * SCAN_P < a.n) sa[gi * SCAN_P] = h0;
          if (gi * SCAN_P + 1 < a.n) sa[gi * SCAN_P + 1] = h1;
        }
        if (gi == 0) {
          float yv = yp + cs.Dc * uu;
          if (a.z) yv *= mb_silu(zz);
          ssu_store_y(a, r, c, yv);
        }
      }
    }
    __syncthreads(); /* s_ea, s_bu and s_h are reused by the next tile */
  }
  if (w == 0 && cok) {
#pragma unroll
    for (int p = 0; p < SCAN_P; p++) {
      int s = gi * SCAN_P + p;
      if (s < a.n) st[s] = h[p];
    }
  }
}

/* ---- decoding batches: one thread per (sequence, channel) ------------------------------------ *
 * k_ssu_dt at batch 64 runs 28,672 two-warp blocks in 21.7 waves (ncu), 43-49 us a 972M layer
 * for ~7 us of state traffic, with every lane of a channel repeating its softplus and its
 * shuffles. Here a thread owns a (sequence, channel)
 * pair and plays the L lanes of that kernel itself: each virtual lane's partial dot product and
 * state pair in the same order, then the lanes' butterfly (xor o = L/2 .. 1: lane i adds lane i ^ o,
 * and since a + b == b + a bit for bit, every lane holds the same value; lane 0's is taken). So
 * every value has the lane kernel's bits: a batch decodes as its sequences would one by one (the
 * `y=rows` checks of cuda_vs_cpu's ssu_dt cases); with bf16 weights, by default, dt_proj runs on
 * the tensor cores instead and the exps in MUFU forms (the MMA and FAST forms below: bits of their
 * own, 13.5 -> 12.0 us at b64). A block is SSU_ROW_C channels (a warp) by B sequences (a warp
 * each; 4, or 8 above 64 sequences: ssu_rows_b). What a thread owns (16 states, 16 values of A, a
 * dt_proj row) lies 64-224 bytes from its neighbour's, so read thread by thread every load
 * instruction touched 32 sectors (ncu: L1 scoreboard stalls, 63 us at b64); the block stages them
 * through shared memory with contiguous loads and stores instead (18 us). */
#define SSU_ROW_C 32
/* Shared memory of k_ssu_dt_rows: A (x log2 e), the states and the staged rows as floats, then
 * the dt_proj rows as 16-byte chunks; rows of a thread's own values are padded to an odd length
 * so that the 32 threads of a warp read them from 32 different banks. */
struct SsuRowsSmem {
  int as, ws, rp; /* A / state row length (floats), weight row length (chunks), x_dbl row */
  size_t a, s, rows, w, dt, bytes; /* offsets (floats; w and dt: bytes) and the total in bytes */
};
/* Rows of 16 states (the models' d_state: L = 8 lanes of SCAN_P = 2) are kept 16 floats long with
 * their four 16-byte chunks swizzled (chunk q of row c at q ^ ((c >> 1) & 3)), so that a thread
 * reads and writes its row's A and states as four 16-byte accesses without bank conflicts (8
 * threads' rows c .. c + 7 fall on 8 different 16-byte bank groups); other rows are padded to an
 * odd length and read a float at a time. The kernel was bound by its shared-memory instructions
 * (MIO throttle the largest stall, ncu at batch 64): a thread issued ~100 a step, 16 loads of A,
 * 16 loads and 16 stores of its states among them. */
#define SSU_SW_NP 16
__host__ __device__ inline int ssu_slot(int c, int s, int as) {
  return as == SSU_SW_NP ? c * SSU_SW_NP + ((((s >> 2) ^ ((c >> 1) & 3)) << 2) | (s & 3))
                         : c * as + s;
}

/* mma: room for the tensor cores' dt_proj outputs too (B rows of SSU_ROW_C + 1 floats) */
__host__ __device__ inline SsuRowsSmem ssu_rows_smem(int L, int R, int nch, int B, bool mma) {
  SsuRowsSmem m;
  const int np = L * SCAN_P;
  m.as = np == SSU_SW_NP ? np : np + 1; /* swizzled rows of 16, else padded to an odd length */
  m.ws = nch | 1;
  m.rp = (R + 7) & ~7;
  m.a = 0;
  m.s = m.a + (size_t)SSU_ROW_C * m.as;
  m.rows = m.s + (size_t)B * SSU_ROW_C * m.as;
  /* 16-byte aligned: every term above is a multiple of 4 floats */
  m.w = (m.rows + (size_t)B * (m.rp + 2 * np)) * sizeof(float);
  m.dt = m.w + (size_t)SSU_ROW_C * m.ws * 16 * (nch > 0);
  m.bytes = m.dt + (mma ? (size_t)B * (SSU_ROW_C + 1) * sizeof(float) : 0);
  return m;
}

/* The L lanes' xor butterfly (o = L/2 .. 1: lane i adds lane i ^ o), played on L values held by
 * one thread: the sum every lane of k_ssu_dt ends with, bit for bit. */
template <int L>
__device__ __forceinline__ float lanes_sum(float (&v)[L]) {
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) {
    float q[L];
#pragma unroll
    for (int i = 0; i < L; i++) q[i] = v[i] + v[i ^ o];
#pragma unroll
    for (int i = 0; i < L; i++) v[i] = q[i];
  }
  return v[0];
}

/* dt_proj of a k_ssu_dt_rows block on the tensor cores (bf16 weights, 16-byte rows): the raw dt of
 * its SSU_ROW_C channels by its B sequences, D (channels x sequences) = W (the staged rows of
 * chunks, ws chunks apart) x the staged x_dbl rows (xs, xstride floats apart) rounded to bf16, in
 * k-steps of 16 with fp32 accumulators; warp 0 takes channels 0-15, warp 1 16-31, one 8-wide tile
 * of sequences each. Sequences past the live ones and k past R (a multiple of 8) are zeros;
 * channel rows past the block's are never read back. Into sDt[sequence][channel]
 * (SSU_ROW_C + 1 floats a row). */
template <int B>
__device__ __forceinline__ void ssu_rows_dt_mma(const uint4 *sW, int ws, const float *xs,
                                                int xstride, int R, int live, float *sDt) {
  static_assert(B <= 8 && SSU_ROW_C == 32, "one 8-wide tile of sequences, two of channels");
  const int lane = threadIdx.x, warp = threadIdx.y, g = lane / 4, tq = lane % 4;
  const uint16_t *w0 = (const uint16_t *)(sW + (size_t)(16 * warp + g) * ws);
  const uint16_t *w1 = w0 + (size_t)8 * ws * 8; /* row g + 8 */
  const float *xr = xs + (size_t)(g < live ? g : 0) * xstride;
  /* k-steps four at a time, unrolled so that their shared-memory loads are all issued before
   * the first mma, into two accumulators (even and odd k-steps) so that two mma chains overlap;
   * summed at the end (a fixed order: the same bits every run) */
  float d[4] = {0.f, 0.f, 0.f, 0.f}, e[4] = {0.f, 0.f, 0.f, 0.f};
  for (int kb = 0; kb < R; kb += 64) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int ks = kb + 16 * u;
      if (ks < R) {
        const int k0 = ks + 2 * tq, k1 = k0 + 8;
        const bool hi = ks + 8 < R; /* the k-step's second half (R % 8 == 0) */
        const uint32_t b0 = g < live ? mb_f32x2_to_bf16(xr[k0], xr[k0 + 1]) : 0u;
        const uint32_t b1 = g < live && hi ? mb_f32x2_to_bf16(xr[k1], xr[k1 + 1]) : 0u;
        mb_mma_bf16_16816(u % 2 ? e : d, mb_ld_bf16x2(w0 + k0), mb_ld_bf16x2(w1 + k0),
                          hi ? mb_ld_bf16x2(w0 + k1) : 0u, hi ? mb_ld_bf16x2(w1 + k1) : 0u, b0,
                          b1);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; i++) d[i] += e[i];
#pragma unroll
  for (int h = 0; h < 2; h++)
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int sq = 2 * tq + j;
      if (sq < B) sDt[sq * (SSU_ROW_C + 1) + 16 * warp + g + 8 * h] = d[2 * h + j];
    }
}

/* The rows kernel's exp2, softplus and SiLU: the accurate forms every decoding kernel shares (the
 * same bits as k_ssu_dt), or (FAST, the tensor-core form only, whose bits are its own anyway) the
 * tile scan's MUFU forms (within ~2e-6 of them) */
template <bool FAST>
__device__ __forceinline__ float ssu_ex2(float x) { return FAST ? mb_fast_ex2(x) : exp2f(x); }
template <bool FAST>
__device__ __forceinline__ float ssu_softplus(float x) {
  return FAST ? mb_fast_softplus(x) : mb_softplus(x);
}
template <bool FAST>
__device__ __forceinline__ float ssu_silu(float x) { return FAST ? mb_fast_silu(x) : mb_silu(x); }

/* MINB > 0: the registers of the batches' form (tensor-core dt_proj, MUFU forms, 8 sequences a
 * block) capped for MINB blocks an SM. Above SSU_ROWS_B8_CAP_FROM sequences it runs with 6 (40
 * registers, no spills) where ptxas takes 44 (5 blocks; shared memory allows 7). H200, 972M bf16,
 * graph replay, two calls with a temporary switch: b256 4,557-4,565 against 4,648-4,654 us a step
 * (the update 42.9 against 44.8 us exposed a layer); b128 2,930-2,933 uncapped against 2,939-2,956;
 * 7 blocks (32 registers, 8 bytes spilled) lost at b128 and b256; the 4-sequence blocks (batches
 * 16 to 64, held to 10 an SM by shared memory) only lose by a cap (docs/cuda_notes.md). */
#define SSU_ROWS_B8_MIN_BLOCKS 6
#define SSU_ROWS_B8_CAP_FROM 128
/* B: sequences a block (a warp each); MMA (bf16 weights in 16-byte rows only): dt_proj on the
 * tensor cores (ssu_rows_dt_mma) instead of the lanes' chunks and butterfly; FAST (with MMA only):
 * the MUFU forms of exp2, softplus and SiLU; MINB: see above */
template <int L, typename WT, int B, bool MMA, bool FAST, int MINB = 0>
__global__ void __launch_bounds__(SSU_ROW_C *B, MINB)
    k_ssu_dt_rows(SsuDtArgs a) {
  static_assert(MMA || !FAST, "the accurate forms keep the lanes' bits");
  extern __shared__ __align__(16) float smem_rows[];
  mb_pdl_trigger();
  constexpr int EPV = 16 / sizeof(WT), NP = L * SCAN_P, NT = SSU_ROW_C * B;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * SSU_ROW_C + tx;
  const int64_t c0 = (int64_t)blockIdx.x * SSU_ROW_C, c = c0 + tx;
  const int64_t b = (int64_t)blockIdx.y * B + ty;
  const int cn = (int)min((int64_t)SSU_ROW_C, a.d - c0); /* channels of this block */
  const bool cok = tx < cn;
  const int R = a.R, n = a.n, nch = a.wvec ? R / EPV : 0;
  const SsuRowsSmem m = ssu_rows_smem(L, R, nch, B, MMA);
  float *sA = smem_rows + m.a, *sS = smem_rows + m.s + (size_t)ty * SSU_ROW_C * m.as;
  float *xs = smem_rows + m.rows + (size_t)ty * (m.rp + 2 * NP), *sB = xs + m.rp, *sC = sB + NP;
  uint4 *sW = (uint4 *)((char *)smem_rows + m.w);
  float *sDt = (float *)((char *)smem_rows + m.dt);
  /* constants before the PDL wait, staged by the whole block from contiguous memory: A of the
   * block's channels, and (16-byte rows) their dt_proj rows */
  for (int i = tid; i < SSU_ROW_C * NP; i += NT) {
    const int cc = i / NP, s = i % NP;
    sA[ssu_slot(cc, s, m.as)] = (cc < cn && s < n) ? a.A[(c0 + cc) * n + s] * MB_LOG2E : 0.f;
  }
  if (nch > 0) {
    const uint4 *w4 = (const uint4 *)a.w + c0 * nch;
    for (int i = tid; i < cn * nch; i += NT) {
      const int cc = i / nch;
      sW[cc * m.ws + (i - cc * nch)] = __ldg(w4 + i);
    }
  }
  const float Dc = (cok && a.Dskip) ? a.Dskip[c] : 0.f;
  const float bc = (cok && a.wbias) ? a.wbias[c] : 0.f;
  /* the states of every block into L2 while the kernels before run (a hint: L2 is where the
   * device's writes meet, so a line asked for early is never a stale one) */
  if (a.l2_lines > 0 && blockIdx.y == 0) {
    const int64_t per = (a.l2_lines + gridDim.x - 1) / gridDim.x;
    const int64_t l0 = (int64_t)blockIdx.x * per, l1 = min(a.l2_lines, l0 + per);
    for (int64_t l = l0 + tid; l < l1; l += NT)
      asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)a.state + l * 128));
  }
  mb_pdl_wait();
  /* with MMA, warps 0 and 1 run dt_proj's tiles for the block once its rows are staged */
  const auto dt_tiles = [&] {
    if constexpr (MMA) {
      const int seqs = (int)min((int64_t)B, a.batch - (int64_t)blockIdx.y * B);
      if (ty < 2) ssu_rows_dt_mma<B>(sW, m.ws, smem_rows + m.rows, m.rp + 2 * NP, R, seqs, sDt);
      __syncthreads();
    }
  };
  /* a warp past the batch (one sequence per warp) stages nothing but meets the block's barriers
   * at the same call sites as the others (a barrier reached from different places in different
   * warps is undefined in CUDA C++; compute-sanitizer's synccheck reports it) */
  const bool live = b < a.batch;
  /* this warp's sequence: its states (contiguous over the block's channels), x_dbl, B, C. With a
   * full block of channels and dt_rank <= 128 (vec_state) every copy is issued before the first
   * is waited for, the states as 16-byte chunks (by cp.async with 16-state rows, the models'; loops
   * of a load and a store each kept a few loads in flight a thread: the op at b64 went from 18.4
   * to 13.2 us) */
  const int64_t bl = live ? b : 0; /* rows of a warp past the batch are never read */
  float *st = a.state + (bl * a.d + c0) * n;
  const float *xrow = a.xdbl + bl * a.ldx;
  const float uu = live && cok ? a.u[bl * a.ldu + c] : 0.f;
  const float zz = live && cok && a.z ? a.z[bl * a.ldz + c] : 0.f;
  constexpr int Q = NP / 4 > 0 ? NP / 4 : 1; /* 16-byte chunks a thread (32 NP / 4 a warp) */
  constexpr int XQ = 4;                      /* x_dbl values a thread: rp <= 4 x 32 */
  const bool vec_state = NP % 4 == 0 && NP <= SSU_ROW_C && n == NP && cn == SSU_ROW_C &&
                         m.rp <= XQ * SSU_ROW_C && ((uintptr_t)st % 16) == 0;
  /* where this thread's k-th 16-byte state chunk (4 (tx + 32 k) .. + 3 of the warp's) sits in
   * the padded rows of shared memory */
  const auto chunk_smem = [&](int k) {
    /* unsigned: a signed i / NP and i % NP took ~40 instructions a warp to place its 4 chunks,
     * twice (in and back; ncu, batch 64) */
    const unsigned i = 4u * (unsigned)(tx + k * SSU_ROW_C);
    return sS + ssu_slot((int)(i / NP), (int)(i % NP), m.as);
  };
  constexpr bool SW = NP == SSU_SW_NP; /* whole 16-byte chunks (and 16-byte aligned) */
  if (live && vec_state && SW) {
    /* every operand straight into shared memory by cp.async: ptxas sinks register loads below
     * the first chunk's store (two global round trips after the PDL wait, SASS; a __syncwarp()
     * that kept them together made the capped b256 form spill: docs/cuda_notes.md, "Loads the
     * compiler had put one after another") */
#pragma unroll
    for (int k = 0; k < Q; k++) cp_async16_cg(chunk_smem(k), (const float4 *)st + tx + k * SSU_ROW_C);
#pragma unroll
    for (int j = 0; j < XQ; j++) {
      const int k = tx + j * SSU_ROW_C;
      if (k < m.rp) cp_async4(xs + k, xrow + (k < R ? k : 0), k < R);
    }
    if (tx < NP) {
      cp_async4(sB + tx, a.Bm + b * a.ldb + (tx < n ? tx : 0), tx < n);
      cp_async4(sC + tx, a.Cm + b * a.ldc + (tx < n ? tx : 0), tx < n);
    }
    cp_async_commit();
    cp_async_wait_all();
  } else if (live && vec_state) {
    float4 q[Q];
    float xv[XQ];
#pragma unroll
    for (int k = 0; k < Q; k++) q[k] = ((const float4 *)st)[tx + k * SSU_ROW_C];
#pragma unroll
    for (int j = 0; j < XQ; j++) {
      const int k = tx + j * SSU_ROW_C;
      xv[j] = k < R ? xrow[k] : 0.f;
    }
    const float bv = tx < n ? a.Bm[b * a.ldb + tx] : 0.f, cv = tx < n ? a.Cm[b * a.ldc + tx] : 0.f;
#pragma unroll
    for (int k = 0; k < Q; k++) {
      float *d = chunk_smem(k);
      d[0] = q[k].x, d[1] = q[k].y, d[2] = q[k].z, d[3] = q[k].w;
    }
#pragma unroll
    for (int j = 0; j < XQ; j++)
      if (tx + j * SSU_ROW_C < m.rp) xs[tx + j * SSU_ROW_C] = xv[j];
    if (tx < NP) sB[tx] = bv, sC[tx] = cv;
  } else if (live) {
    for (int i = tx; i < SSU_ROW_C * NP; i += SSU_ROW_C) {
      const int cc = i / NP, s = i % NP;
      sS[ssu_slot(cc, s, m.as)] = (cc < cn && s < n) ? st[cc * n + s] : 0.f;
    }
    for (int k = tx; k < m.rp; k += SSU_ROW_C) xs[k] = k < R ? xrow[k] : 0.f;
    for (int k = tx; k < NP; k += SSU_ROW_C) {
      sB[k] = k < n ? a.Bm[b * a.ldb + k] : 0.f;
      sC[k] = k < n ? a.Cm[b * a.ldc + k] : 0.f;
    }
  }
  __syncthreads();
  dt_tiles();
  if (!live) return;
  if (cok) {
    /* dt_proj: the tensor cores' tile (MMA), or lane gi's chunks j = gi, gi + L, ... in order,
     * then the lanes' butterfly */
    float dot;
    if constexpr (MMA) {
      dot = sDt[ty * (SSU_ROW_C + 1) + tx];
    } else {
      float p[L];
#pragma unroll
      for (int gi = 0; gi < L; gi++) p[gi] = 0.f;
      if (nch > 0) {
        const uint4 *wr = sW + tx * m.ws;
        for (int mm = 0; mm < nch; mm += L) {
#pragma unroll
          for (int gi = 0; gi < L; gi++)
            if (mm + gi < nch) p[gi] += dot16(wr[mm + gi], xs + (mm + gi) * EPV, WT());
        }
      } else {
        const WT *wrow = (const WT *)a.w + c * (int64_t)R;
        for (int mm = 0; mm < R; mm += L) {
#pragma unroll
          for (int gi = 0; gi < L; gi++)
            if (mm + gi < R) p[gi] = fmaf(wval(wrow, mm + gi), xs[mm + gi], p[gi]);
        }
      }
      dot = lanes_sum(p);
    }
    const float draw = dot + bc;
    if (a.delta_out) a.delta_out[b * a.d + c] = draw;
    const float dt = a.softplus ? ssu_softplus<FAST>(draw) : draw;
    const float du = dt * uu;
    /* lane gi's two states, then the same butterfly over the lanes' partial outputs */
    float yl[L];
    if constexpr (SW) { /* a chunk of 4 states (lanes 2 q and 2 q + 1) at a time */
#pragma unroll
      for (int q = 0; q < SSU_SW_NP / 4; q++) {
        const int slot = ssu_slot(tx, 4 * q, m.as);
        const float4 a4 = *(const float4 *)(sA + slot);
        float4 *hp = (float4 *)(sS + slot);
        const float4 h4 = *hp;
        /* B and C of the sequence: the same for every thread (broadcast); xs's rows are whole
         * 16-byte chunks (rp a multiple of 8) */
        const float4 b4 = *(const float4 *)(sB + 4 * q), c4 = *(const float4 *)(sC + 4 * q);
        const float h0 = fmaf(ssu_ex2<FAST>(dt * a4.x), h4.x, du * b4.x);
        const float h1 = fmaf(ssu_ex2<FAST>(dt * a4.y), h4.y, du * b4.y);
        const float h2 = fmaf(ssu_ex2<FAST>(dt * a4.z), h4.z, du * b4.z);
        const float h3 = fmaf(ssu_ex2<FAST>(dt * a4.w), h4.w, du * b4.w);
        *hp = make_float4(h0, h1, h2, h3);
        yl[2 * q] = fmaf(c4.y, h1, c4.x * h0);
        yl[2 * q + 1] = fmaf(c4.w, h3, c4.z * h2);
      }
    } else {
      float *hs = sS + tx * m.as;
      const float *Ac = sA + tx * m.as;
#pragma unroll
      for (int gi = 0; gi < L; gi++) {
        const int s0 = gi * SCAN_P;
        const float h0 = fmaf(ssu_ex2<FAST>(dt * Ac[s0]), hs[s0], du * sB[s0]);
        const float h1 = fmaf(ssu_ex2<FAST>(dt * Ac[s0 + 1]), hs[s0 + 1], du * sB[s0 + 1]);
        hs[s0] = h0, hs[s0 + 1] = h1;
        yl[gi] = fmaf(sC[s0 + 1], h1, sC[s0] * h0);
      }
    }
    float yv = lanes_sum(yl) + Dc * uu;
    if (a.z) yv *= ssu_silu<FAST>(zz);
    ssu_store_y(a, b, c, yv);
  }
  __syncwarp();
  if (vec_state) { /* the states back, contiguous */
#pragma unroll
    for (int k = 0; k < Q; k++) {
      const float *d = chunk_smem(k);
      ((float4 *)st)[tx + k * SSU_ROW_C] =
          SW ? *(const float4 *)d : make_float4(d[0], d[1], d[2], d[3]);
    }
  } else {
    for (int i = tx; i < SSU_ROW_C * NP; i += SSU_ROW_C) {
      const int cc = i / NP, s = i % NP;
      if (cc < cn && s < n) st[cc * n + s] = sS[ssu_slot(cc, s, m.as)];
    }
  }
}

/* From this batch on, decoding steps take k_ssu_dt_rows (MAMBABYTE_CUDA_SSU_ROWS=N: from batch N;
 * 0: never). H200, 972M bf16, `cuda_bench --batch` (rows from batch 8 against lanes, one run):
 * 2,032 vs 2,173 B/s at b8, 7,600 vs 6,797 at b16, 21,232 vs 14,380 at b64, 38,715 vs 18,633 at
 * b256; the op at b64 18.3 against 49.1 us. */
#define SSU_ROWS_MIN_BATCH 16

/* Sequences a block of k_ssu_dt_rows: 8 above 64 (the dt_proj rows staged once for twice the
 * sequences, 896 blocks at batch 256 instead of 1,792), 4 below. cuda_bench --batch (H200, 972M
 * bf16, graph replay, B/s, 8 against 4 in one call, the FMA form): b16 7,753 / 7,921, b32 14,275 /
 * 14,525, b64 22,980 / 23,100, b128 33,104 / 33,107, b256 42,750 / 41,700. With dt_proj on the
 * tensor cores, 8 led at b128 in each of three rounds (+0.1 to +2.9%; b16 to b64 split) (cuda_bench
 * --batch-peers, docs/cuda_notes.md, "The batch state update's dt_proj on the tensor cores"). */
static int ssu_rows_b(int64_t batch) { return batch > 64 ? 8 : 4; }

/* The rows kernel's shared memory for these arguments and B sequences a block, 0 when it would
 * not fit (then the lanes' kernel runs). */
template <int L, typename WT>
static size_t ssu_dt_rows_smem(const SsuDtArgs &a, int B, bool mma) {
  const int nch = a.wvec ? a.R / (16 / (int)sizeof(WT)) : 0;
  const size_t bytes = ssu_rows_smem(L, a.R, nch, B, mma).bytes;
  return bytes <= 96 * 1024 ? bytes : 0;
}

template <int L, typename WT, int B, bool MMA, bool FAST, int MINB = 0>
static int ssu_dt_rows_launch_b(mb_ctx *ctx, const SsuDtArgs &a) {
  static_assert(!MMA || sizeof(WT) == 2, "the tensor cores' dt_proj takes bf16 weights");
  size_t smem = ssu_dt_rows_smem<L, WT>(a, B, MMA);
  if (smem > 48 * 1024)
    MBCUDA_CHECK(cudaFuncSetAttribute(k_ssu_dt_rows<L, WT, B, MMA, FAST, MINB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "selective_state_update_dt (smem attribute)");
  const dim3 grid(mbcuda_blocks(a.d, SSU_ROW_C), (unsigned)((a.batch + B - 1) / B));
  /* A grid of one wave spread evenly: at 16 and 32 sequences (448 and 896 blocks of up to 10 an
   * SM) the update launches under k_conv_linear (PDL), and its blocks crowded onto the SMs that
   * kernel's 112 blocks leave room on. H100, graph replay, against the switch off
   * (MAMBABYTE_CUDA_SPREAD=0) in one call, two rounds: b16 1.684-1.685 against 1.808-1.813 ms a
   * step, b32 1.865-1.867 against 1.926-1.932, b64 to b256 unchanged (the cap does not bind);
   * the same cap on the batch-1 update lost 1.7% (docs/cuda_notes.md, "Short grids spread") */
  if (mbcuda_st(ctx)->spread)
    smem = mbcuda_spread_smem(ctx, (const void *)k_ssu_dt_rows<L, WT, B, MMA, FAST, MINB>, SSU_ROW_C * B, smem, (int64_t)grid.x * grid.y);
  MBCUDA_LAUNCH("selective_state_update_dt (rows)", (k_ssu_dt_rows<L, WT, B, MMA, FAST, MINB>), grid, dim3(SSU_ROW_C, B), smem, a);
  return MB_OK;
}

template <int L, typename WT, int B>
static int ssu_dt_rows_launch_mma(mb_ctx *ctx, const SsuDtArgs &a, bool fast) {
  if (!fast) return ssu_dt_rows_launch_b<L, WT, B, true, false>(ctx, a);
  /* the registers capped above 128 sequences only (SSU_ROWS_B8_MIN_BLOCKS) */
  if constexpr (B == 8)
    if (a.batch > SSU_ROWS_B8_CAP_FROM)
      return ssu_dt_rows_launch_b<L, WT, B, true, true, SSU_ROWS_B8_MIN_BLOCKS>(ctx, a);
  return ssu_dt_rows_launch_b<L, WT, B, true, true>(ctx, a);
}

/* mma: bf16 weights in 16-byte rows only, fast with mma only (ssu_dt_launch_l) */
template <int L, typename WT>
static int ssu_dt_rows_launch(mb_ctx *ctx, const SsuDtArgs &a, int B, bool mma, bool fast) {
  if constexpr (sizeof(WT) == 2)
    if (mma)
      return B == 4 ? ssu_dt_rows_launch_mma<L, WT, 4>(ctx, a, fast)
                    : ssu_dt_rows_launch_mma<L, WT, 8>(ctx, a, fast);
  return B == 4 ? ssu_dt_rows_launch_b<L, WT, 4, false, false>(ctx, a)
                : ssu_dt_rows_launch_b<L, WT, 8, false, false>(ctx, a);
}

/* 64 threads a block at every batch. Tried: 256 from batch 4 (the 28,672 two-warp blocks of batch
 * 64 looked like scheduling overhead): this op alone 55.2 against 49.5 us a 972M layer at batch 64
 * on the H200 (cuda_bench's breakdown, consecutive runs); reverted. */
template <int L, typename WT, int TILE>
static int ssu_dt_launch_t(mb_ctx *ctx, const SsuDtArgs &a, dim3 grid, int threads, size_t smem) {
  if (smem > 48 * 1024)
    MBCUDA_CHECK(cudaFuncSetAttribute(k_ssu_dt<L, WT, TILE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "selective_state_update_dt (smem attribute)");
  MBCUDA_LAUNCH("selective_state_update_dt", k_ssu_dt<L, WT, TILE>, grid, dim3(threads), smem, a);
  return MB_OK;
}

template <int L>
static int ssu_dt_launch_l(mb_ctx *ctx, SsuDtArgs &a, int wdtype) {
  const int env = mbcuda_st(ctx)->ssu_rows, from = env < 0 ? SSU_ROWS_MIN_BATCH : env;
  const int rb = mbcuda_st(ctx)->ssu_rows_b ? mbcuda_st(ctx)->ssu_rows_b : ssu_rows_b(a.batch);
  const bool bf = wdtype == MB_DTYPE_BF16;
  /* bf16 weights: dt_proj on the tensor cores (MAMBABYTE_CUDA_SSU_ROWS_MMA=0: the lanes' FMAs) */
  const bool mma = bf && a.wvec && mbcuda_st(ctx)->ssu_rows_mma;
  /* ... and there the MUFU forms of exp2, softplus and SiLU (MAMBABYTE_CUDA_SSU_ROWS_FAST=0: the
   * accurate ones) */
  const bool fast = mma && mbcuda_st(ctx)->ssu_rows_fast;
  if (a.len == 1 && from > 0 && a.batch >= from &&
      (bf ? ssu_dt_rows_smem<L, uint16_t>(a, rb, mma) : ssu_dt_rows_smem<L, float>(a, rb, false)) > 0) {
    const int64_t sbytes = a.batch * a.d * a.n * (int64_t)sizeof(float);
    a.l2_lines = sbytes <= mbcuda_st(ctx)->ssu_l2_bytes ? (sbytes + 127) / 128 : 0;
    return bf ? ssu_dt_rows_launch<L, uint16_t>(ctx, a, rb, mma, fast)
              : ssu_dt_rows_launch<L, float>(ctx, a, rb, false, false);
  }
  /* several positions of one sequence: a warp per position (x_dbl's rows 16-byte aligned for
   * dt_proj's chunk loads; MAMBABYTE_CUDA_SSU_POS=0 keeps the lanes' kernel, A/B runs) */
  if (a.len > 1 && mbcuda_st(ctx)->ssu_pos && ((uintptr_t)a.xdbl % 16) == 0 && a.ldx % 4 == 0) {
    const dim3 grid((unsigned)((a.d + 32 / L - 1) / (32 / L)), (unsigned)a.batch);
    if (wdtype == MB_DTYPE_BF16)
      MBCUDA_LAUNCH("selective_scan_dt (positions)", (k_ssu_pos<L, uint16_t>), grid, dim3(POS_W * 32), 0, a);
    else
      MBCUDA_LAUNCH("selective_scan_dt (positions)", (k_ssu_pos<L, float>), grid, dim3(POS_W * 32), 0, a);
    return MB_OK;
  }
  const int threads = L > 64 ? L : 64;
  const int CB = threads / L;
  const size_t per_pos = (size_t)(((a.R + 7) & ~7) + 2 * L * SCAN_P) * sizeof(float);
  /* positions staged at once: up to SSU_TILE while that fits in 48 KB (one for a long dt_rank) */
  a.tile = (int)(a.len < SSU_TILE ? a.len : SSU_TILE);
  while (a.tile > 1 && per_pos * a.tile > 48 * 1024) a.tile >>= 1;
  const size_t smem = per_pos * a.tile;
  const dim3 grid((unsigned)((a.d + CB - 1) / CB), (unsigned)a.batch);
  const bool bf16 = wdtype == MB_DTYPE_BF16;
  if (a.tile == 1)
    return bf16 ? ssu_dt_launch_t<L, uint16_t, 1>(ctx, a, grid, threads, smem)
                : ssu_dt_launch_t<L, float, 1>(ctx, a, grid, threads, smem);
  return bf16 ? ssu_dt_launch_t<L, uint16_t, SSU_TILE>(ctx, a, grid, threads, smem)
              : ssu_dt_launch_t<L, float, SSU_TILE>(ctx, a, grid, threads, smem);
}

static int ssu_dt_launch(mb_ctx *ctx, SsuDtArgs &a, int wdtype);

extern "C" int mbcuda_selective_state_update_dt(
    mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl, int64_t ld_xdbl,
    const void *dt_w, int wdtype, const float *dt_bias, int64_t dt_rank, const float *A,
    const float *Bm, int64_t ldb, const float *Cm, int64_t ldc, const float *Dskip, const float *z,
    int64_t ldz, float *state, int64_t batch, int64_t d, int64_t n, int delta_softplus,
    float *delta_out, float *y, int64_t ldy, uint16_t *y_bf16) {
  if (batch <= 0 || d <= 0) return MB_OK;
  if (n > 64)
    return mb_fail(MB_ERR_UNSUPPORTED,
                   "cuda: selective_state_update_dt: d_state %lld > 64 is not supported", (long long)n);
  if (batch > 65535 || dt_rank > 8192)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_state_update_dt: batch > 65535 or dt_rank > 8192");
  const int wvec = ssu_wvec(dt_rank, wdtype, dt_w);
  SsuDtArgs a = {u, ldu, x_dbl, ld_xdbl, dt_w, dt_bias, (int)dt_rank, wvec, A, Bm, ldb, Cm, ldc,
                 Dskip, z, ldz, state, d, (int)n, delta_softplus, delta_out, y, ldy, 1, nullptr, 0, batch,
                 y_bf16, 0};
  return ssu_dt_launch(ctx, a, wdtype);
}

/* mb_selective_scan_dt: the decoding step's kernel with a.len positions per sequence. */
extern "C" int mbcuda_selective_scan_dt(
    mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl, int64_t ld_xdbl,
    const void *dt_w, int wdtype, const float *dt_bias, int64_t dt_rank, const float *A,
    const float *Bm, int64_t ldb, const float *Cm, int64_t ldc, const float *Dskip, const float *z,
    int64_t ldz, float *state, float *states_all, int64_t batch, int64_t len, int64_t d, int64_t n,
    int delta_softplus, float *delta_out, float *y, int64_t ldy) {
  if (batch <= 0 || len <= 0 || d <= 0) return MB_OK;
  if (n > 64)
    return mb_fail(MB_ERR_UNSUPPORTED,
                   "cuda: selective_scan_dt: d_state %lld > 64 is not supported", (long long)n);
  if (batch > 65535 || dt_rank > 8192)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_scan_dt: batch > 65535 or dt_rank > 8192");
  const int wvec = ssu_wvec(dt_rank, wdtype, dt_w);
  SsuDtArgs a = {u, ldu, x_dbl, ld_xdbl, dt_w, dt_bias, (int)dt_rank, wvec, A, Bm, ldb, Cm, ldc,
                 Dskip, z, ldz, state, d, (int)n, delta_softplus, delta_out, y, ldy, len,
                 states_all, 0, batch, nullptr, 0};
  return ssu_dt_launch(ctx, a, wdtype);
}

static int ssu_dt_launch(mb_ctx *ctx, SsuDtArgs &a, int wdtype) {
  switch (scan_lanes(a.n)) {
    case 1: return ssu_dt_launch_l<1>(ctx, a, wdtype);
    case 2: return ssu_dt_launch_l<2>(ctx, a, wdtype);
    case 4: return ssu_dt_launch_l<4>(ctx, a, wdtype);
    case 8: return ssu_dt_launch_l<8>(ctx, a, wdtype);
    case 16: return ssu_dt_launch_l<16>(ctx, a, wdtype);
    default: return ssu_dt_launch_l<32>(ctx, a, wdtype);
  }
}
