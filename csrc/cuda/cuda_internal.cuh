/*
 * cuda_internal.cuh — state and helpers shared by the files of the CUDA backend (csrc/cuda).
 *
 * Only gemm.cu includes cuBLAS; the handle is kept here as an opaque pointer so that every other
 * file compiles without the cuBLAS headers.
 */
#ifndef MAMBABYTE_CUDA_INTERNAL_CUH
#define MAMBABYTE_CUDA_INTERNAL_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stddef.h>

#include "../common/internal.h"

#define MBCUDA_MAX_GRAPHS 256
#define MBCUDA_MAX_RETIRED 16
#define MBCUDA_ROW_DONE 16384 /* row groups of the pass's in_proj with the conv (2 d_inner at most) */
#define MBCUDA_DONE_GRID_BAR 32 /* index in mbcuda_state.done of a grid barrier's two counters */
#define MBCUDA_DONE_SCAN_AMAX 40 /* ... of the tile scan's largest |y| and its blocks done */
#define MBCUDA_DL_SLOTS 8 /* staging buffers of mb_download_async (downloads in flight) */
/* mb_linear_bf16 and mb_linear_add_norm with bf16 weights take the tensor cores from this many
 * rows (mb_linear keeps its GEMV, one row's bits a row, up to 8) */
#define MBCUDA_TC_MIN_ROWS 2
/* mb_linear_add_norm: above this many rows (forward chunks; decoding batches stop at 256) the
 * product is added to the residual by the GEMM rather than split into parts */
#define MBCUDA_ACC_MIN_ROWS 256

/* One staging buffer of mb_download_async: src is copied here on the compute stream, then to the
 * host on the copy stream. `ready`: recorded on the compute stream after the device copy; `done`:
 * on the copy stream after the host copy (the compute stream waits on it before reusing the slot). */
struct mbcuda_dl_slot {
  void *buf;
  size_t bytes;
  cudaEvent_t ready, done;
  uint64_t ticket; /* the last download that used the slot (0: none) */
};

struct mbcuda_state {
  cudaStream_t stream;
  void *blas;            /* cublasHandle_t, owned by gemm.cu */
  void *lt;              /* cuBLASLt handle and plans (blas_lt.cu); NULL: GemmEx only */
  int lt_algo;           /* bf16 and fp32 products of lt_min_rows rows and more through cuBLASLt
                          * with this entry of its heuristic list (MAMBABYTE_CUDA_LT_ALGO; -1,
                          * the default: cublasGemmEx) */
  int lt_acc;            /* the same for the products added in place (mb_linear_add_norm's
                          * forward out_proj: MAMBABYTE_CUDA_LT_ACC_ALGO, default 2; -1 GemmEx) */
  int lt_min_rows;       /* (MAMBABYTE_CUDA_LT_MIN_ROWS, default 257: forward chunks) */
  int lt_acc_f32;        /* lt_acc for fp32 weights (MAMBABYTE_CUDA_LT_F32_ACC, default 3) */
  int lt_bias;           /* a bias of a product over lt_min_rows rows or more added by cuBLASLt's
                          * epilogue (MAMBABYTE_CUDA_LT_BIAS, default 1; 0: a pass of its own) */
  int f32_acc;           /* fp32 weights: mb_linear_add_norm over forward chunks adds the product
                          * into the residual in the GEMM: 1 with TF32 (the default), 2 also in
                          * strict fp32, 0 never (MAMBABYTE_CUDA_F32_ACC=tf32|1|0; A/B runs) */
  void *blas_ws;         /* cuBLAS workspace (set once so that capture never allocates) */
  size_t blas_ws_bytes;
  void *scratch;         /* bf16 copies of x for the tensor-core path of mb_linear */
  size_t scratch_bytes;
  void *scratch_f16;     /* fp16 operands of TF32 products (mbcuda_scratch_f16) */
  size_t scratch_f16_bytes;
  int tf32_f16;          /* TF32 products on fp16 operands: 0 off, 1 where the cost model gains
                          * (default), 2 from 9 rows on (MAMBABYTE_CUDA_TF32_F16) */
  int lt_f16;            /* their product on this cuBLASLt entry (MAMBABYTE_CUDA_LT_F16_ALGO;
                          * -1: cublasGemmEx) */
  void *scratch_old[MBCUDA_MAX_RETIRED]; /* outgrown scratch buffers that live graphs may still
                                          * use: freed when the last graph is destroyed */
  int n_scratch_old;
  unsigned int *done;    /* device counters: [0] the last-block pattern of mb_sample,
                          * [MBCUDA_DONE_GRID_BAR..+1] k_conv_linear's grid barrier,
                          * [MBCUDA_DONE_SCAN_AMAX..+1] the tile scan's y_f16_exp */
  unsigned int *row_done; /* the verification pass's in_proj: arrivals a row group
                           * (MBCUDA_ROW_DONE of them), back to 0 after each launch */
  cudaGraphExec_t graphs[MBCUDA_MAX_GRAPHS];
  int capturing;
  int graph_edges;       /* a captured graph's edges out of cuBLAS's kernels into ours: ours may
                          * launch once every block of theirs has started, and wait for their end
                          * at their PDL wait (MAMBABYTE_CUDA_GRAPH_EDGES=0: as captured) */
  cudaGraphNode_t *own_nodes; /* the kernel nodes this backend launched in the capture under way */
  size_t n_own_nodes, cap_own_nodes;
  int pdl;               /* launch with programmatic dependent launch (MAMBABYTE_CUDA_PDL=0: off) */
  int scan_tile;         /* the parallel-in-time scan: positions per lane (16), 0 off
                          * (MAMBABYTE_CUDA_SCAN_TILE=0; A/B runs) */
  int gemv_rows;         /* inputs per thread of the n <= 8 GEMV: 0 chosen by shape (default),
                          * else fixed (MAMBABYTE_CUDA_GEMV_ROWS; A/B runs) */
  int gemv_out;          /* output rows per thread of that GEMV: 0 by its inputs per thread
                          * (default), 1 one (MAMBABYTE_CUDA_GEMV_OUT=1; A/B runs) */
  int ssu_rows;          /* decoding batches from this size take the state update's thread-per-
                          * (sequence, channel) kernel (MAMBABYTE_CUDA_SSU_ROWS; 0 never) */
  int ssu_rows_mma;      /* ... its dt_proj with bf16 weights on the tensor cores
                          * (MAMBABYTE_CUDA_SSU_ROWS_MMA=0: the lanes' fp32 FMAs, A/B runs) */
  int ssu_rows_fast;     /* ... and there the MUFU forms of exp2, softplus and SiLU
                          * (MAMBABYTE_CUDA_SSU_ROWS_FAST=0: the accurate ones, A/B runs) */
  int ssu_rows_b;        /* ... its sequences a block: 4 or 8 (MAMBABYTE_CUDA_SSU_ROWS_B, A/B
                          * runs), else (0, the default) by batch (step.cu's ssu_rows_b) */
  int spread;            /* ... its one-wave grids capped at ceil(blocks / SMs) blocks an SM
                          * (mbcuda_spread_smem; MAMBABYTE_CUDA_SPREAD=0 off, A/B runs) */
  int gemv_g256_rows;    /* n <= 8 GEMVs of fewer rows than this per SM take a block a row (16;
                          * MAMBABYTE_CUDA_GEMV_G256_ROWS, A/B runs) */
  int ssu_pos;           /* mb_selective_scan_dt over several positions: a warp per position
                          * (MAMBABYTE_CUDA_SSU_POS=0: the lanes' kernel; A/B runs) */
  int draft_cluster;     /* mb_draft_greedy as one cluster launch where the shape allows
                          * (MAMBABYTE_CUDA_DRAFT_CLUSTER=0: the ops; A/B runs) */
  size_t draft_cluster_smem; /* the dynamic shared memory k_draft_cluster was opted in to */
  int draft_timing;      /* MAMBABYTE_CUDA_DRAFT_TIMING=1: k_draft_cluster's phases on stderr */
  long long *draft_timing_buf; /* its stamps (device memory, allocated on first use) */
  int conv_linear;       /* mb_conv1d_step_linear as one kernel from this many rows to 64 (9;
                          * MAMBABYTE_CUDA_CONV_LINEAR=N, 0: never, the conv then mb_linear) */
  int conv_linear_per_sm[3]; /* k_conv_linear's resident blocks an SM at its largest shared
                              * memory, [0] fp32 and [1] bf16 weights, [2] bf16 on the tensor
                              * cores (-1: not asked yet) */
  int sample_serial;     /* mb_sample with top_k != 1 on k_sample even for vocabularies of 256 or
                          * fewer (MAMBABYTE_CUDA_SAMPLE_SERIAL=1; A/B runs, the same draws) */
  int conv_linear_mma;   /* ... with bf16 weights, its partial product on the tensor cores
                          * (MAMBABYTE_CUDA_CONV_LINEAR_MMA=0: fp32 FMAs, A/B runs) */
  int conv_linear_max;   /* ... and then up to this many rows (MAMBABYTE_CUDA_CONV_LINEAR_MAX,
                          * 9 to 256; else, and by default, 256; the fp32-FMA form stops at 64) */
  int64_t ssu_l2_bytes;  /* k_ssu_dt_rows asks for a step's states in L2 before its PDL wait when
                          * they are at most this many bytes (5/8 of L2; MAMBABYTE_CUDA_SSU_L2=N
                          * MiB, 0 off) */
  int out_split;         /* mb_linear_add_norm's product split over in_f into at most this many
                          * parts (2, 4, 8 or 16; MAMBABYTE_CUDA_OUT_SPLIT, 0: the two calls) */
  int conv_pos;          /* the verification pass's conv: a thread per (channel, position)
                          * (MAMBABYTE_CUDA_CONV_POS=0: k_conv_seq; A/B runs) */
  int norm_prologue;     /* mb_decode_layers at batch 1: the norm in in_proj's kernel, the residual
                          * add in out_proj's (MAMBABYTE_CUDA_NORM_PROLOGUE=0: off, A/B runs) */
  int in_ring;           /* ... and in_proj's weights streamed into a ring of shared-memory stages by
                          * bulk copies (MAMBABYTE_CUDA_IN_RING: 0 off; on otherwise) */
  int in_ring_per_sm[2][2][2][3]; /* its kernels' resident blocks an SM (-1: not asked yet), by
                                   * bf16, 8 values a thread, plain row, and the form (0: any
                                   * shape, 1: whole chunk rounds, 2: and the norm's NT form) */
  size_t in_ring_smem_set[2][2][2][3]; /* ... at this much dynamic shared memory (a block's) */
  int in_ring_tc_per_sm[2][2][2]; /* ... the same for its tensor-core form (gemv_tc.cuh), by 8
                                   * values a thread, plain row, and the norm's NT form */
  size_t in_ring_tc_smem_set[2][2][2];
  int gemv_tc;           /* n <= 8 GEMVs of in_proj's shape with bf16 weights on the tensor cores
                          * (gemv_tc.cuh; MAMBABYTE_CUDA_GEMV_TC=0: the FMA form, A/B runs) */
  int norm_nt;           /* the decoding norms' rows of 256 threads with a bound the block shares
                          * (add_norm_reg_row's NT form, where norm_nt_fits; MAMBABYTE_CUDA_NORM_NT=0
                          * off, A/B runs) */
  int verify_norm;       /* mb_verify_layers: the norm in in_proj's kernel, one position a block
                          * (MAMBABYTE_CUDA_VERIFY_NORM=0: off, A/B runs) */
  int verify_conv;       /* ... and the conv in that kernel's last block of each row group
                          * (MAMBABYTE_CUDA_VERIFY_CONV=0: off, A/B runs) */
  int scan_tile_smem_set; /* its shared-memory opt-in done (per device, so per
                           * context) */
  int sm_count;
  size_t smem_per_sm, smem_reserved; /* shared memory an SM, and the runtime's share a block */
  struct {                           /* mbcuda_spread_smem's occupancy queries, answered once */
    const void *func;
    int threads;
    size_t smem;
    int fit;
    size_t opted;                    /* the largest padding its function was opted in to (0) */
  } spread_fit[8];
  int spread_fits;
  int cc_major, cc_minor;
  char name[256];
  cudaStream_t copy_stream; /* mb_download_async's device-to-host copies (created on first use) */
  mbcuda_dl_slot dl[MBCUDA_DL_SLOTS];
  uint64_t dl_done;         /* every download up to this ticket is known to be in host memory */
};

static inline mbcuda_state *mbcuda_st(mb_ctx *ctx) { return (mbcuda_state *)ctx->cuda; }
static inline cudaStream_t mbcuda_stream(mb_ctx *ctx) { return mbcuda_st(ctx)->stream; }

/* The dynamic shared memory a launch of `blocks` blocks of `func` (threads each, smem bytes asked
 * for) should ask for so that at most ceil(blocks / SMs) of them share an SM: launched under a
 * running kernel (PDL), a grid's blocks go to whichever SMs have room first, so a short grid crowds
 * onto the SMs its predecessor leaves free. smem itself where that cap would not bind; sets the
 * function's opt-in above 48 KB. */
size_t mbcuda_spread_smem(mb_ctx *ctx, const void *func, int threads, size_t smem, int64_t blocks);

/* Checks a runtime call; on failure records "cuda: <op>: <message>" and returns MB_ERR_DEVICE
 * (MB_ERR_OOM for cudaErrorMemoryAllocation). */
#define MBCUDA_CHECK(call, op)                                                                   \
  do {                                                                                           \
    cudaError_t mbcuda_e_ = (call);                                                              \
    if (mbcuda_e_ != cudaSuccess) {                                                              \
      return mb_fail(mbcuda_e_ == cudaErrorMemoryAllocation ? MB_ERR_OOM : MB_ERR_DEVICE,        \
                     "cuda: %s: %s", (op), cudaGetErrorString(mbcuda_e_));                       \
    }                                                                                            \
  } while (0)

/* After a kernel launch: checks the launch error (not a sync). */
#define MBCUDA_LAUNCHED(op) MBCUDA_CHECK(cudaGetLastError(), op)

/* Ensures the scratch buffer holds at least bytes; grows it only outside graph capture. */
int mbcuda_scratch(mb_ctx *ctx, size_t bytes, const char *op, void **out);
/* The same for the fp16 operands of TF32 products (gemm.cu): a buffer of its own, since callers
 * of mb_linear may hold rows in the other. */
int mbcuda_scratch_f16(mb_ctx *ctx, size_t bytes, const char *op, void **out);

/* norm.cu: mb_linear_add_norm's norm (rows of d <= 2048): row i's h is the sum of nparts (2, 4, 8
 * or 16) parts at parts + p * part_stride (rows of d) in that order, + h_bias (may be NULL), then
 * mb_add_norm's residual add and norm. */
int mbcuda_sum_add_norm(mb_ctx *ctx, const float *parts, int nparts, int64_t part_stride,
                        const float *h_bias, float *residual, int accumulate, const float *weight,
                        const float *bias, int norm_kind, float eps, int64_t n, int64_t d,
                        float *out, uint16_t *out_bf16);

/* norm.cu: mb_add_norm's norm of rows that already hold the residual sum (res, not written),
 * a warp a row as k_add_norm_warp: for n >= 257 rows of d <= 2048, d % 4 == 0, 16-byte aligned
 * rows (mbcuda_norm_rows_fit). */
bool mbcuda_norm_rows_fit(int64_t n, int64_t d, const float *res, const float *weight,
                          const float *bias, const float *out, const uint16_t *out_bf16);
/* *exp = the scaled fp16 rows' exponent (mb_to_f16_scaled's rule) of n rows of cols floats at
 * ld, from a pass for their largest magnitude (gemm.cu). */
int mbcuda_f16_exp_rows(mb_ctx *ctx, const float *rows, int64_t ld, int64_t n, int64_t cols,
                        int32_t *exp, const char *op);
/* dst (n, cols) dense fp16 = rows (n of cols floats at ld) scaled by the power of two that
 * puts the magnitude whose bits are at *bound_bits in [2^14, 2^15) (gemm.cu). */
int mbcuda_f16_scale_rows(mb_ctx *ctx, const float *rows, int64_t ld, int64_t n, int64_t cols,
                          const unsigned *bound_bits, uint16_t *dst, const char *op);
/* The same, scaled by 2^*exp (an exponent in device memory) (gemm.cu). */
int mbcuda_f16_rows_given(mb_ctx *ctx, const float *rows, int64_t ld, int64_t n, int64_t cols,
                          const int32_t *exp, uint16_t *dst, const char *op);
int mbcuda_norm_rows(mb_ctx *ctx, const float *res, const float *weight, const float *bias,
                     int norm_kind, float eps, int64_t n, int64_t d, float *out,
                     uint16_t *out_bf16);

/* gemm.cu: cuBLAS handle lifetime. */
int mbcuda_blas_init(mb_ctx *ctx);
void mbcuda_blas_destroy(mb_ctx *ctx);
void mbcuda_lt_init(mb_ctx *ctx);
void mbcuda_lt_destroy(mb_ctx *ctx);
int mbcuda_gemm_lt(mb_ctx *ctx, int index, const void *w, int wtype, const void *x, int xtype,
                   int64_t ldx, int64_t n, int64_t in_f, int64_t out_f, void *y, int ytype,
                   int64_t ldy, float beta, const float *dev_ab, const float *bias, int compute,
                   const char *op, int *done);

/* How the decoding device functions (gemv.cuh, norm_row.cuh, ssu.cuh) read activations: through
 * the read-only path (written by an earlier kernel), from L2 only (written by other blocks of the
 * same kernel: the L1 of this SM may hold a stale line), or generic (shared memory). */
enum class XLoad { Ldg, Cg, Generic };
template <XLoad XL> struct XLoadTag {};
__device__ __forceinline__ float4 xload(const float4 *p, XLoadTag<XLoad::Ldg>) { return __ldg(p); }
__device__ __forceinline__ float4 xload(const float4 *p, XLoadTag<XLoad::Cg>) { return __ldcg(p); }
__device__ __forceinline__ float4 xload(const float4 *p, XLoadTag<XLoad::Generic>) { return *p; }
__device__ __forceinline__ float xload(const float *p, XLoadTag<XLoad::Ldg>) { return __ldg(p); }
__device__ __forceinline__ float xload(const float *p, XLoadTag<XLoad::Cg>) { return __ldcg(p); }
__device__ __forceinline__ float xload(const float *p, XLoadTag<XLoad::Generic>) { return *p; }

/* Programmatic dependent launch (Hopper): every kernel of the backend starts with
 * mb_pdl_trigger() (the next kernel in the stream may be scheduled now) and calls mb_pdl_wait()
 * before it touches memory written by earlier work (it returns once the previous grid has
 * completed and its writes are visible). Without the launch attribute both are no-ops. Reading
 * constant weights before the wait is allowed: nothing in the stream writes them. */
__device__ __forceinline__ void mb_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void mb_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Release / acquire at GPU scope for the grid-wide barriers (the pattern of CUTLASS's
 * GenericBarrier): an arrival that publishes the block's earlier writes (the block's threads meet
 * at __syncthreads first), and a load that sees them, without a full sequentially consistent
 * fence (__threadfence: MEMBAR.SC.GPU) on either side. */
__device__ __forceinline__ unsigned mb_atom_add_acq_rel_gpu(unsigned *p, unsigned v) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}
__device__ __forceinline__ void mb_red_add_release_gpu(unsigned *p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned mb_ld_acquire_gpu(const unsigned *p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/* cp.async (sm_80+): global -> shared copies that hold no register while in flight (so no
 * compiler schedule can put one behind a store that waits for another's data). 4 bytes (valid =
 * false writes a zero), or 16 bytes through L2 only (both addresses 16-byte aligned). */
__device__ __forceinline__ void cp_async4(float *dst, const float *src, bool valid) {
  unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async16_cg(void *dst, const void *src) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

/* A 16-byte load of constant data (weights) meant to be issued before a later mb_pdl_wait().
 * ptxas may move a read-only load (__ldg, ld.global.nc) past the wait: in k_ssu_dt's SASS (ncu,
 * 972M batch-1 step) dt_proj's chunks were asked for only after it, while its plain loads (A, D,
 * the bias) stayed before. So a plain (coherent) load. (Measured: no change in that kernel's
 * exposed time, 3.77 against 3.76 us, against an __ldg peer in the same call, whose build also
 * issued them before the wait: docs/cuda_notes.md.) */
__device__ __forceinline__ uint4 mb_load_early(const uint4 *p) {
  uint4 v;
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

#define MB_PDL_ENTRY() \
  do {                 \
    mb_pdl_trigger();  \
    mb_pdl_wait();     \
  } while (0)

/* Records the kernel node just captured on the context's stream as the backend's own
 * (context.cu; what graph_end's edge rewriting, MAMBABYTE_CUDA_GRAPH_EDGES, tells apart). */
void mbcuda_note_launch(mb_ctx *ctx);
/* After each successful launch of ours: the note, while a capture that rewrites edges runs. */
static inline void mbcuda_launched(mb_ctx *ctx) {
  if (mbcuda_st(ctx)->capturing && mbcuda_st(ctx)->graph_edges) mbcuda_note_launch(ctx);
}

/* Launches kern on the context's stream, with the programmatic-serialization attribute when
 * `pdl` (and the context uses PDL). */
template <typename... KArgs, typename... Args>
static inline cudaError_t mbcuda_launch_pdl(mb_ctx *ctx, bool pdl, void (*kern)(KArgs...),
                                            dim3 grid, dim3 block, size_t smem, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = mbcuda_stream(ctx);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl && mbcuda_st(ctx)->pdl ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kern, static_cast<KArgs>(args)...);
  if (e == cudaSuccess) mbcuda_launched(ctx);
  return e;
}

/* mbcuda_launch_pdl with PDL wherever the context uses it (every kernel of ours but the tile
 * scan, scan.cu). */
template <typename... KArgs, typename... Args>
static inline cudaError_t mbcuda_launch(mb_ctx *ctx, void (*kern)(KArgs...), dim3 grid, dim3 block,
                                        size_t smem, Args... args) {
  return mbcuda_launch_pdl(ctx, true, kern, grid, block, smem, args...);
}
#define MBCUDA_LAUNCH(op, ...) MBCUDA_CHECK(mbcuda_launch(ctx, __VA_ARGS__), op)

static inline unsigned int mbcuda_blocks(int64_t work, int threads) {
  int64_t b = (work + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 0x7fffffff) b = 0x7fffffff;
  return (unsigned int)b;
}

/* ---- device helpers shared by the op files ---------------------------------------------------- */

#define MB_LOG2E 1.4426950408889634f

__device__ __forceinline__ float mb_bf16_to_f32(uint16_t v) {
  return __uint_as_float(((uint32_t)v) << 16);
}

/* An activation's value, stored as fp32 or as bfloat16 bits (the forward's bf16 xz and delta). */
__device__ __forceinline__ float mb_act(const float *p) { return *p; }
__device__ __forceinline__ float mb_act(const uint16_t *p) { return mb_bf16_to_f32(*p); }

/* fp32 -> bfloat16 bits, round to nearest even (the bf16 activations; the CPU's mbcpu_f32_to_bf16) */
__device__ __forceinline__ uint16_t mb_f32_to_bf16(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
/* four of them, packed for one 8-byte store */
__device__ __forceinline__ uint2 mb_f32x4_to_bf16(float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  return make_uint2(*(const uint32_t *)&a, *(const uint32_t *)&b);
}

/* two of them, packed as an mma operand register (the first in the low half) */
__device__ __forceinline__ uint32_t mb_f32x2_to_bf16(float lo, float hi) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(lo, hi);
  return *(const uint32_t *)&a;
}

/* two bf16 values (4-byte aligned) as one mma operand register */
__device__ __forceinline__ uint32_t mb_ld_bf16x2(const uint16_t *p) { return *(const uint32_t *)p; }

/* d += A (16 x 16, row-major fragments a0..a3) x B (16 x 8, column fragments b0, b1), bf16 inputs
 * and fp32 accumulators: mma.sync.m16n8k16 (lane = 4 g + t holds A's rows g and g + 8 at columns
 * 2t, 2t + 1 (a0, a1) and 2t + 8, 2t + 9 (a2, a3); B's rows 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1)
 * of column g; d's rows g (d0, d1) and g + 8 (d2, d3) at columns 2t, 2t + 1). */
__device__ __forceinline__ void mb_mma_bf16_16816(float (&d)[4], uint32_t a0, uint32_t a1,
                                                  uint32_t a2, uint32_t a3, uint32_t b0,
                                                  uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* The power of two that puts a largest magnitude of `bits` (an fp32's bits) in [2^14, 2^15): its
 * exponent, -113 to 164 (0 for zero, inf or NaN, which then pass as they are): the scaled fp16
 * rows' rule (mb_to_f16_scaled). */
__device__ __forceinline__ int mb_f16_scale_exp(unsigned bits) {
  const float a = __uint_as_float(bits);
  if (!(a > 0.f) || isinf(a)) return 0;
  int e;
  (void)frexpf(a, &e); /* a = m 2^e, m in [0.5, 1) */
  return 15 - e;
}

/* 2^e as two floats s1, s2 (2^164 is not one): v * s1 * s2 is v * 2^e exactly wherever the
 * result is an fp16 normal. */
__device__ __forceinline__ void mb_f16_scale_factors(int e, float *s1, float *s2) {
  *s1 = ldexpf(1.f, e / 2);
  *s2 = ldexpf(1.f, e - e / 2);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Block-wide sum/max; every thread gets the result. red must hold 32 floats. */
/* The sums' first step: each warp's butterfly into red[warp]; returns red[lane] (0 past the
 * warps) to warp 0, or with `all` to every warp, for the second butterfly over them. */
static __device__ float block_sum_warps(float v, float *red, bool all) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  return (all || wid == 0) && lane < nw ? red[lane] : 0.f;
}
static __device__ float block_sum(float v, float *red) {
  v = block_sum_warps(v, red, false);
  if ((threadIdx.x >> 5) == 0) {
    v = warp_sum(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  return red[0];
}
/* block_sum's value (the same second butterfly) with one barrier fewer: every warp runs that
 * butterfly itself instead of reading warp 0's result back */
static __device__ float block_sum_all(float v, float *red) {
  return warp_sum(block_sum_warps(v, red, true));
}
static __device__ float block_max(float v, float *red) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  v = (threadIdx.x < nw) ? red[threadIdx.x] : -INFINITY;
  if (wid == 0) {
    v = warp_max(v);
    if (lane == 0) red[0] = v;
  }
  __syncthreads();
  return red[0];
}

__device__ __forceinline__ float mb_softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float mb_silu(float x) { return x / (1.f + expf(-x)); }

/* 2^x with the MUFU instruction alone: exp2f adds a rescaling for results below 2^-126, which only
 * matter when dt * A < -87, where the state has decayed to nothing in either form. */
__device__ __forceinline__ float mb_fast_ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/* The softplus and SiLU of the tile scan (and of the batch state update's tensor-core form) on the
 * MUFU unit: once per position and channel they cost as much as a few states' updates in the
 * accurate forms (log1pf, expf, an IEEE division).
 * softplus: e = exp(x); below 1/16 log1p's series to e^5 (truncation < e^6/6: 3e-8 relative),
 * else log(1 + e) (1 + e rounds within 2^-24: < 1e-6 relative); x > 20: x, as torch's threshold.
 * Both stay within ~2e-6 of the accurate forms (cuda_vs_cpu holds y to 1e-5). */
__device__ __forceinline__ float mb_fast_softplus(float x) {
  /* both forms computed and one selected: no branch per position (a lane's 16 positions took
   * ~26 instructions each with the branches) */
  const float e = __expf(x);
  const float series = e * (1.f - e * (0.5f - e * (1.f / 3.f - e * (0.25f - e * 0.2f))));
  const float lg = __logf(1.f + e);
  const float r = e < 0.0625f ? series : lg;
  return x > 20.f ? x : r;
}
/* silu: exp(-x) by ex2.approx.ftz, not __expf, whose non-ftz form adds a compare, a scaling and a
 * squaring for results below 2^-126 (x > 87.3): there 1 + e rounds to 1 either way, and elsewhere
 * the two are the same MUFU.EX2 of the same product ((-x) log2e and x (-log2e) round alike), so
 * the same bits in three instructions fewer. */
__device__ __forceinline__ float mb_fast_silu(float x) {
  return __fdividef(x, 1.f + mb_fast_ex2(x * -MB_LOG2E));
}

static inline int row_threads(int64_t d) {
  int t = 32;
  while (t < 256 && t < d) t <<= 1;
  return t;
}


#endif
