/*
 * context.cu — CUDA backend: devices, contexts (stream, cuBLAS, scratch), memory, downloads
 * overlapped with compute (a copy stream and staging buffers) and graphs.
 *
 * Every op of the backend only enqueues work on the context's stream (no synchronisation, no
 * allocation), so a decode step can be captured into a CUDA graph and replayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.cuh"

#define MBCUDA_SCRATCH_INIT (16u << 20)
#define MBCUDA_BLAS_WS (32u << 20)

extern "C" int mbcuda_device_count(int *out_count) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInitializationError
#if CUDART_VERSION >= 12000
      || e == cudaErrorSystemNotReady || e == cudaErrorSystemDriverMismatch
#endif
  ) {
    (void)cudaGetLastError();
    *out_count = 0;
    return MB_OK;
  }
  MBCUDA_CHECK(e, "cudaGetDeviceCount");
  *out_count = n;
  return MB_OK;
}

static void mbcuda_free_state(mbcuda_state *st) {
  if (!st) return;
  for (int i = 0; i < MBCUDA_MAX_GRAPHS; i++)
    if (st->graphs[i]) cudaGraphExecDestroy(st->graphs[i]);
  if (st->stream) cudaStreamSynchronize(st->stream);
  if (st->copy_stream) cudaStreamSynchronize(st->copy_stream);
  for (int i = 0; i < MBCUDA_DL_SLOTS; i++) {
    if (st->dl[i].buf) cudaFree(st->dl[i].buf);
    if (st->dl[i].ready) cudaEventDestroy(st->dl[i].ready);
    if (st->dl[i].done) cudaEventDestroy(st->dl[i].done);
  }
  if (st->copy_stream) cudaStreamDestroy(st->copy_stream);
  if (st->scratch) cudaFree(st->scratch);
  if (st->scratch_f16) cudaFree(st->scratch_f16);
  for (int i = 0; i < st->n_scratch_old; i++) cudaFree(st->scratch_old[i]);
  if (st->blas_ws) cudaFree(st->blas_ws);
  if (st->done) cudaFree(st->done);
  if (st->row_done) cudaFree(st->row_done);
  if (st->draft_timing_buf) cudaFree(st->draft_timing_buf);
  free(st->own_nodes);
  if (st->stream) cudaStreamDestroy(st->stream);
  free(st);
}

/* A cuBLASLt heuristic entry from an environment value e (blas_lt.cu asks for at most 8), else
 * def; negative: cublasGemmEx. */
static int lt_entry(const char *e, int def) {
  const int v = e && e[0] ? atoi(e) : def;
  return v > 7 ? 7 : v;
}

extern "C" int mbcuda_ctx_init(mb_ctx *ctx) {
  int count = 0;
  int rc = mbcuda_device_count(&count);
  if (rc) return rc;
  if (count == 0) return mb_fail(MB_ERR_DEVICE, "cuda: no CUDA device is present");
  if (ctx->device < 0 || ctx->device >= count)
    return mb_fail(MB_ERR_INVALID, "cuda: device %d does not exist (%d present)", ctx->device,
                   count);
  MBCUDA_CHECK(cudaSetDevice(ctx->device), "cudaSetDevice");
  mbcuda_state *st = (mbcuda_state *)calloc(1, sizeof(mbcuda_state));
  if (!st) return mb_fail(MB_ERR_OOM, "cuda: out of host memory");
  ctx->cuda = st;
  cudaDeviceProp prop;
  cudaError_t e = cudaGetDeviceProperties(&prop, ctx->device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc(&st->scratch, MBCUDA_SCRATCH_INIT);
  if (e == cudaSuccess) e = cudaMalloc(&st->blas_ws, MBCUDA_BLAS_WS);
  if (e == cudaSuccess) e = cudaMalloc((void **)&st->done, 256);
  if (e == cudaSuccess) e = cudaMemset(st->done, 0, 256);
  if (e == cudaSuccess) e = cudaMalloc((void **)&st->row_done, MBCUDA_ROW_DONE * sizeof(unsigned));
  if (e == cudaSuccess) e = cudaMemset(st->row_done, 0, MBCUDA_ROW_DONE * sizeof(unsigned));
  if (e != cudaSuccess) {
    mbcuda_free_state(st);
    ctx->cuda = NULL;
    return mb_fail(e == cudaErrorMemoryAllocation ? MB_ERR_OOM : MB_ERR_DEVICE,
                   "cuda: context creation: %s", cudaGetErrorString(e));
  }
  {
    const char *e_pdl = getenv("MAMBABYTE_CUDA_PDL");
    st->pdl = !(e_pdl && e_pdl[0] == '0') && prop.major >= 9;
    const char *e_tile = getenv("MAMBABYTE_CUDA_SCAN_TILE");
    /* "0": off (the sequential scan); else 16 positions per lane (8, which lost: 524 against 487
     * us a layer at 8192 positions on the H200, is retired) */
    st->scan_tile = (e_tile && e_tile[0] == '0') ? 0 : 16;
    const char *e_rows = getenv("MAMBABYTE_CUDA_GEMV_ROWS");
    st->gemv_rows = e_rows ? atoi(e_rows) : 0;
    if (st->gemv_rows != 1 && st->gemv_rows != 2 && st->gemv_rows != 4 && st->gemv_rows != 8)
      st->gemv_rows = 0;
    const char *e_out = getenv("MAMBABYTE_CUDA_GEMV_OUT");
    st->gemv_out = e_out && !strcmp(e_out, "1") ? 1 : 0;
    const char *e_ssu = getenv("MAMBABYTE_CUDA_SSU_ROWS");
    st->ssu_rows = e_ssu && e_ssu[0] ? atoi(e_ssu) : -1; /* -1: step.cu's default */
    const char *e_srm = getenv("MAMBABYTE_CUDA_SSU_ROWS_MMA");
    st->ssu_rows_mma = !(e_srm && e_srm[0] == '0');
    const char *e_srf = getenv("MAMBABYTE_CUDA_SSU_ROWS_FAST");
    st->ssu_rows_fast = !(e_srf && e_srf[0] == '0');
    const char *e_srb = getenv("MAMBABYTE_CUDA_SSU_ROWS_B");
    const int srb = e_srb ? atoi(e_srb) : 0;
    st->ssu_rows_b = srb == 4 || srb == 8 ? srb : 0;
    const char *e_spread = getenv("MAMBABYTE_CUDA_SPREAD");
    st->spread = !(e_spread && e_spread[0] == '0');
    const char *e_g256 = getenv("MAMBABYTE_CUDA_GEMV_G256_ROWS");
    /* 16 (8 gave bf16 out_proj a warp a row: batch-1 decoding 10% faster, batches 4 and 8 and
     * the verification pass 13% slower; docs/cuda_notes.md) */
    st->gemv_g256_rows = e_g256 && atoi(e_g256) > 0 ? atoi(e_g256) : 16;
    const char *e_np = getenv("MAMBABYTE_CUDA_NORM_PROLOGUE");
    st->norm_prologue = !(e_np && e_np[0] == '0');
    const char *e_ir = getenv("MAMBABYTE_CUDA_IN_RING");
    const int ir = e_ir && (!strcmp(e_ir, "0") || !strcmp(e_ir, "1")) ? atoi(e_ir) : -1;
    st->in_ring = prop.major < 9 ? 0 : ir; /* bulk copies: sm_90 on */
    memset(st->in_ring_per_sm, 0xff, sizeof st->in_ring_per_sm);
    memset(st->in_ring_tc_per_sm, 0xff, sizeof st->in_ring_tc_per_sm);
    const char *e_tc = getenv("MAMBABYTE_CUDA_GEMV_TC");
    st->gemv_tc = !(e_tc && e_tc[0] == '0');
    const char *e_nn = getenv("MAMBABYTE_CUDA_NORM_NT");
    st->norm_nt = !(e_nn && e_nn[0] == '0');
    const char *e_dc = getenv("MAMBABYTE_CUDA_DRAFT_CLUSTER");
    st->draft_cluster = !(e_dc && e_dc[0] == '0');
    const char *e_dt = getenv("MAMBABYTE_CUDA_DRAFT_TIMING");
    st->draft_timing = e_dt && e_dt[0] == '1';
    const char *e_vn = getenv("MAMBABYTE_CUDA_VERIFY_NORM");
    st->verify_norm = !(e_vn && e_vn[0] == '0');
    const char *e_vc = getenv("MAMBABYTE_CUDA_VERIFY_CONV");
    st->verify_conv = !(e_vc && e_vc[0] == '0');
    const char *e_sp = getenv("MAMBABYTE_CUDA_SSU_POS");
    st->ssu_pos = !(e_sp && e_sp[0] == '0');
    const char *e_cp = getenv("MAMBABYTE_CUDA_CONV_POS");
    st->conv_pos = !(e_cp && e_cp[0] == '0');
    const char *e_cl = getenv("MAMBABYTE_CUDA_CONV_LINEAR");
    st->conv_linear = !e_cl || !e_cl[0] ? 9 : atoi(e_cl) <= 0 ? 0 : atoi(e_cl) < 2 ? 2 : atoi(e_cl);
    st->conv_linear_per_sm[0] = st->conv_linear_per_sm[1] = st->conv_linear_per_sm[2] = -1;
    const char *e_clm = getenv("MAMBABYTE_CUDA_CONV_LINEAR_MMA");
    st->conv_linear_mma = !(e_clm && e_clm[0] == '0');
    const char *e_sse = getenv("MAMBABYTE_CUDA_SAMPLE_SERIAL");
    st->sample_serial = e_sse && e_sse[0] == '1';
    const char *e_clx = getenv("MAMBABYTE_CUDA_CONV_LINEAR_MAX");
    st->conv_linear_max = e_clx ? atoi(e_clx) : 0; /* conv_linear.cu applies its bounds */
    const char *e_os = getenv("MAMBABYTE_CUDA_OUT_SPLIT");
    /* 4: against the two calls, decoding b16 +2.6%, b64 +4.0%, b256 +3.7% on the H200; 8 parts
     * gained less (+1.8%, +3.5%, +3.0%), 16 lost (-3.7%, -2.7%, -3.6%) */
    st->out_split = e_os && e_os[0] ? atoi(e_os) : 4;
    /* cuBLASLt's heuristic entries for forward chunks' products (blas_lt.cu): entry 2 for
     * out_proj added into the residual, 151.6 against GemmEx's 174.5 us at 8192 rows on the H200
     * (tools/device/blas_sweep.cu), forward over 8192 bytes bf16 53.5-53.8 against 54.0-54.6 ms;
     * the other products keep GemmEx (in_proj's best entry gained 2%, x_proj's and dt_proj's
     * 3-7% of 20-40 us, each a different entry) */
    st->lt_algo = lt_entry(getenv("MAMBABYTE_CUDA_LT_ALGO"), -1);
    st->lt_acc = lt_entry(getenv("MAMBABYTE_CUDA_LT_ACC_ALGO"), 2);
    const char *e_ltr = getenv("MAMBABYTE_CUDA_LT_MIN_ROWS");
    st->lt_min_rows = e_ltr && atoi(e_ltr) > 0 ? atoi(e_ltr) : MBCUDA_ACC_MIN_ROWS + 1;
    /* fp32 weights' forward out_proj in place with TF32 on entry 3 (a split-K form with its own
     * reduction): 310.9 against GemmEx's 337.5 us alone (GemmEx's in place lost to the two calls) */
    /* fp32 weights where TF32 is allowed: wide forward products on the fp16 tensor cores, with
     * power-of-two scales (gemm.cu); "0" off, "2" every product of more than 8 rows (tests) */
    const char *e_tf = getenv("MAMBABYTE_CUDA_TF32_F16");
    st->tf32_f16 = e_tf && e_tf[0] == '0' ? 0 : e_tf && e_tf[0] == '2' ? 2 : 1;
    st->lt_f16 = lt_entry(getenv("MAMBABYTE_CUDA_LT_F16_ALGO"), -1);
    const char *e_fa = getenv("MAMBABYTE_CUDA_F32_ACC");
    st->f32_acc = !e_fa || !e_fa[0] || !strcmp(e_fa, "tf32") ? 1 : e_fa[0] == '1' ? 2 : 0;
    st->lt_acc_f32 = lt_entry(getenv("MAMBABYTE_CUDA_LT_F32_ACC"), 3);
    /* a forward chunk's bias (a tapped dt_proj's) in the product's epilogue, not a pass that reads
     * and writes the whole output again (docs/cuda_notes.md) */
    const char *e_lb = getenv("MAMBABYTE_CUDA_LT_BIAS");
    st->lt_bias = !(e_lb && e_lb[0] == '0');
    /* 5/8 of L2 (31 MiB of the H200's 50): decoding b64 +1.1-1.5%, b128 +2.4% in graph replay;
     * b256's 59 MB of states, asked for with a 64 MiB cap, lost 2.5% (docs/cuda_notes.md) */
    const char *e_sl2 = getenv("MAMBABYTE_CUDA_SSU_L2");
    const int64_t sl2 = e_sl2 && e_sl2[0] ? atoi(e_sl2) : -1;
    st->ssu_l2_bytes = sl2 < 0 ? (int64_t)prop.l2CacheSize * 5 / 8 : (sl2 > 4096 ? 4096 : sl2) << 20;
    /* edges out of cuBLAS at launch completion: decoding b16 +4.9%, b64 +1.5%, b256 +0.9% in
     * graph replay on the H200 (cuda_bench --batch-peers; docs/cuda_notes.md) */
    const char *e_ge = getenv("MAMBABYTE_CUDA_GRAPH_EDGES");
    st->graph_edges = st->pdl && !(e_ge && e_ge[0] == '0');
  }
  st->scratch_bytes = MBCUDA_SCRATCH_INIT;
  st->blas_ws_bytes = MBCUDA_BLAS_WS;
  st->sm_count = prop.multiProcessorCount;
  st->smem_per_sm = prop.sharedMemPerMultiprocessor;
  st->smem_reserved = prop.reservedSharedMemPerBlock;
  st->cc_major = prop.major;
  st->cc_minor = prop.minor;
  snprintf(st->name, sizeof st->name, "%s", prop.name);
  rc = mbcuda_blas_init(ctx);
  if (rc) {
    mbcuda_free_state(st);
    ctx->cuda = NULL;
    return rc;
  }
  return MB_OK;
}

extern "C" int mbcuda_ctx_destroy(mb_ctx *ctx) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (!st) return MB_OK;
  if (st->capturing) {
    cudaGraph_t g = NULL;
    cudaStreamEndCapture(st->stream, &g);
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
  }
  if (st->stream) cudaStreamSynchronize(st->stream);
  mbcuda_blas_destroy(ctx);
  mbcuda_free_state(st);
  ctx->cuda = NULL;
  return MB_OK;
}

extern "C" int mbcuda_ctx_synchronize(mb_ctx *ctx) {
  MBCUDA_CHECK(cudaStreamSynchronize(mbcuda_stream(ctx)), "synchronize");
  return MB_OK;
}

extern "C" int mbcuda_ctx_info(mb_ctx *ctx, char *buf, size_t cap) {
  mbcuda_state *st = mbcuda_st(ctx);
  char name[256];
  size_t j = 0;
  for (size_t i = 0; st->name[i] && j + 2 < sizeof name; i++) { /* JSON-escape the name */
    char c = st->name[i];
    if (c == '"' || c == '\\') name[j++] = '\\';
    name[j++] = (c >= 0x20) ? c : ' ';
  }
  name[j] = 0;
  if (cap == 0) return MB_OK;
  /* device memory in use (all processes), for the benchmark's memory column; 0/0 if unavailable */
  size_t mem_free = 0, mem_total = 0;
  if (cudaSetDevice(ctx->device) != cudaSuccess || cudaMemGetInfo(&mem_free, &mem_total) != cudaSuccess) {
    (void)cudaGetLastError();
    mem_free = mem_total = 0;
  }
  snprintf(buf, cap,
           "{\"backend\":\"cuda\",\"device\":%d,\"name\":\"%s\",\"sm\":%d,"
           "\"multiprocessors\":%d,\"blas\":\"cublas\",\"pdl\":%s,\"scan_tile\":%d,\"tf32\":%s,"
           "\"mem_free\":%zu,\"mem_total\":%zu}",
           ctx->device, name, st->cc_major * 10 + st->cc_minor, st->sm_count,
           st->pdl ? "true" : "false", st->scan_tile, (ctx->flags & MB_FLAG_ALLOW_TF32) ? "true" : "false",
           mem_free, mem_total);
  return MB_OK;
}

extern "C" int mbcuda_alloc(mb_ctx *ctx, size_t bytes, void **out) {
  (void)ctx;
  *out = NULL;
  if (bytes == 0) return MB_OK;
  if (mbcuda_st(ctx)->capturing)
    return mb_fail(MB_ERR_INVALID, "cuda: alloc: not allowed while a graph is being captured");
  MBCUDA_CHECK(cudaMalloc(out, bytes), "cudaMalloc");
  return MB_OK;
}

extern "C" int mbcuda_free(mb_ctx *ctx, void *ptr) {
  if (!ptr) return MB_OK;
  /* cudaFree may run before queued work that reads ptr finishes on a non-blocking stream. */
  MBCUDA_CHECK(cudaStreamSynchronize(mbcuda_stream(ctx)), "free (synchronize)");
  MBCUDA_CHECK(cudaFree(ptr), "cudaFree");
  return MB_OK;
}

extern "C" int mbcuda_memcpy_h2d(mb_ctx *ctx, void *dst, const void *host_src, size_t bytes) {
  if (bytes == 0) return MB_OK;
  cudaStream_t s = mbcuda_stream(ctx);
  MBCUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s), "memcpy_h2d");
  MBCUDA_CHECK(cudaStreamSynchronize(s), "memcpy_h2d (synchronize)");
  return MB_OK;
}

extern "C" int mbcuda_memcpy_d2h(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes) {
  if (bytes == 0) return MB_OK;
  cudaStream_t s = mbcuda_stream(ctx);
  MBCUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s), "memcpy_d2h");
  MBCUDA_CHECK(cudaStreamSynchronize(s), "memcpy_d2h (synchronize)");
  return MB_OK;
}

extern "C" int mbcuda_memcpy_d2d(mb_ctx *ctx, void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return MB_OK;
  MBCUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, mbcuda_stream(ctx)),
               "memcpy_d2d");
  return MB_OK;
}

extern "C" int mbcuda_memset(mb_ctx *ctx, void *dst, int value, size_t bytes) {
  if (bytes == 0) return MB_OK;
  MBCUDA_CHECK(cudaMemsetAsync(dst, value, bytes, mbcuda_stream(ctx)), "memset");
  return MB_OK;
}

/* ---- downloads overlapped with compute (mb_download_async) ----------------------------------- *
 * Ticket t uses staging slot t % MBCUDA_DL_SLOTS. On the compute stream: wait until the slot's
 * previous host copy is done (a device-side wait), copy src into the slot, record `ready`. On the
 * copy stream: wait for `ready`, copy the slot to the host, record `done`. Every ticket records its
 * slot's `done` (a zero-byte one too), and the copy stream runs them in order, so waiting on the
 * `done` of ticket t's slot (which a later ticket may have re-recorded) covers t and all before. */

extern "C" int mbcuda_host_alloc(mb_ctx *ctx, size_t bytes, void **out) {
  if (mbcuda_st(ctx)->capturing)
    return mb_fail(MB_ERR_INVALID, "cuda: host_alloc: not allowed while a graph is being captured");
  MBCUDA_CHECK(cudaHostAlloc(out, bytes, cudaHostAllocPortable), "cudaHostAlloc");
  return MB_OK;
}

extern "C" int mbcuda_host_free(mb_ctx *ctx, void *ptr) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (st->copy_stream) MBCUDA_CHECK(cudaStreamSynchronize(st->copy_stream), "host_free (synchronize)");
  MBCUDA_CHECK(cudaFreeHost(ptr), "cudaFreeHost");
  return MB_OK;
}

/* The caller's memory, page-locked in place: mb_download_async's host copy then lands in it
 * directly (a DMA on the copy stream), with no staging buffer on the host side. */
extern "C" int mbcuda_host_register(mb_ctx *ctx, void *ptr, size_t bytes) {
  if (mbcuda_st(ctx)->capturing)
    return mb_fail(MB_ERR_INVALID, "cuda: host_register: not allowed while a graph is being captured");
  const cudaError_t e = cudaHostRegister(ptr, bytes, cudaHostRegisterPortable);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); /* not sticky: leave no error for the next launch check to report */
    return mb_fail(e == cudaErrorMemoryAllocation ? MB_ERR_OOM : MB_ERR_DEVICE,
                   "cuda: cudaHostRegister: %s", cudaGetErrorString(e));
  }
  return MB_OK;
}

extern "C" int mbcuda_host_unregister(mb_ctx *ctx, void *ptr) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (st->copy_stream)
    MBCUDA_CHECK(cudaStreamSynchronize(st->copy_stream), "host_unregister (synchronize)");
  const cudaError_t e = cudaHostUnregister(ptr);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return mb_fail(MB_ERR_DEVICE, "cuda: cudaHostUnregister: %s", cudaGetErrorString(e));
  }
  return MB_OK;
}

static int mbcuda_dl_init(mbcuda_state *st) {
  if (st->copy_stream) return MB_OK;
  for (int i = 0; i < MBCUDA_DL_SLOTS; i++) {
    MBCUDA_CHECK(cudaEventCreateWithFlags(&st->dl[i].ready, cudaEventDisableTiming),
                 "download_async (event)");
    MBCUDA_CHECK(cudaEventCreateWithFlags(&st->dl[i].done, cudaEventDisableTiming),
                 "download_async (event)");
  }
  MBCUDA_CHECK(cudaStreamCreateWithFlags(&st->copy_stream, cudaStreamNonBlocking),
               "download_async (copy stream)");
  return MB_OK;
}

/* A download's ticket and slot. Staged: src copied into the slot's buffer on the compute stream
 * first. Direct (the caller keeps src unwritten until the wait): the copy stream reads src itself,
 * so the compute stream only records `ready`. */
static int download(mb_ctx *ctx, const char *op, void *host_dst, const void *src, size_t bytes,
                    bool staged, uint64_t *out_ticket) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (st->capturing)
    return mb_fail(MB_ERR_INVALID, "cuda: %s: not allowed while a graph is being captured", op);
  int rc = mbcuda_dl_init(st);
  if (rc) return rc;
  const uint64_t ticket = ctx->downloads + 1;
  mbcuda_dl_slot *sl = &st->dl[ticket % MBCUDA_DL_SLOTS];
  const void *from = src;
  if (staged && bytes > 0) {
    if (bytes > sl->bytes) { /* grow: the slot's last host copy must be over first */
      size_t nb = (bytes + 255) & ~(size_t)255;
      MBCUDA_CHECK(cudaEventSynchronize(sl->done), "download_async (grow: wait)");
      if (sl->buf) MBCUDA_CHECK(cudaFree(sl->buf), "download_async (grow: cudaFree)");
      sl->buf = NULL;
      sl->bytes = 0;
      MBCUDA_CHECK(cudaMalloc(&sl->buf, nb), "download_async (staging cudaMalloc)");
      sl->bytes = nb;
    } else if (sl->ticket) {
      MBCUDA_CHECK(cudaStreamWaitEvent(st->stream, sl->done, 0), "download_async (wait slot)");
    }
    MBCUDA_CHECK(cudaMemcpyAsync(sl->buf, src, bytes, cudaMemcpyDeviceToDevice, st->stream),
                 "download_async (device copy)");
    from = sl->buf;
  }
  MBCUDA_CHECK(cudaEventRecord(sl->ready, st->stream), "download_async (record)");
  MBCUDA_CHECK(cudaStreamWaitEvent(st->copy_stream, sl->ready, 0), "download_async (wait ready)");
  if (bytes > 0)
    MBCUDA_CHECK(cudaMemcpyAsync(host_dst, from, bytes, cudaMemcpyDeviceToHost, st->copy_stream),
                 "download_async (host copy)");
  MBCUDA_CHECK(cudaEventRecord(sl->done, st->copy_stream), "download_async (record)");
  sl->ticket = ticket;
  ctx->downloads = ticket;
  *out_ticket = ticket;
  return MB_OK;
}

extern "C" int mbcuda_download_async(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes,
                                     uint64_t *out_ticket) {
  return download(ctx, "download_async", host_dst, src, bytes, true, out_ticket);
}

extern "C" int mbcuda_download_async_direct(mb_ctx *ctx, void *host_dst, const void *src,
                                            size_t bytes, uint64_t *out_ticket) {
  return download(ctx, "download_async_direct", host_dst, src, bytes, false, out_ticket);
}

extern "C" int mbcuda_download_wait(mb_ctx *ctx, uint64_t ticket) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (ticket <= st->dl_done) return MB_OK;
  mbcuda_dl_slot *sl = &st->dl[ticket % MBCUDA_DL_SLOTS];
  MBCUDA_CHECK(cudaEventSynchronize(sl->done), "download_wait");
  if (sl->ticket > st->dl_done) st->dl_done = sl->ticket;
  return MB_OK;
}

static int mbcuda_live_graphs(const mbcuda_state *st) {
  int live = 0;
  for (int i = 0; i < MBCUDA_MAX_GRAPHS; i++) live += st->graphs[i] != NULL;
  return live;
}

/* Grows one of the context's scratch buffers (*buf of *have bytes) to at least bytes, outside
 * graph capture; an outgrown buffer that live graphs may still refer to is retired, not freed. */
static int scratch_grow(mb_ctx *ctx, void **buf, size_t *have, size_t bytes, const char *op,
                        void **out) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (bytes > *have) {
    if (st->capturing)
      return mb_fail(MB_ERR_INVALID,
                     "cuda: %s: needs %zu bytes of scratch (has %zu) while a graph is being "
                     "captured; run the op once at this size before capturing",
                     op, bytes, *have);
    size_t nb = bytes + bytes / 4;
    MBCUDA_CHECK(cudaStreamSynchronize(st->stream), "scratch (synchronize)");
    if (*buf && mbcuda_live_graphs(st)) { /* their kernels hold the old buffer's address */
      if (st->n_scratch_old == MBCUDA_MAX_RETIRED)
        return mb_fail(MB_ERR_INVALID,
                       "cuda: %s: the scratch buffer must grow to %zu bytes, and %d outgrown "
                       "ones are still held by live graphs; destroy the graphs first",
                       op, bytes, MBCUDA_MAX_RETIRED);
      st->scratch_old[st->n_scratch_old++] = *buf;
    } else if (*buf) {
      MBCUDA_CHECK(cudaFree(*buf), "scratch (cudaFree)");
    }
    *buf = NULL;
    *have = 0;
    MBCUDA_CHECK(cudaMalloc(buf, nb), "scratch (cudaMalloc)");
    *have = nb;
  }
  *out = *buf;
  return MB_OK;
}

int mbcuda_scratch(mb_ctx *ctx, size_t bytes, const char *op, void **out) {
  mbcuda_state *st = mbcuda_st(ctx);
  return scratch_grow(ctx, &st->scratch, &st->scratch_bytes, bytes, op, out);
}

int mbcuda_scratch_f16(mb_ctx *ctx, size_t bytes, const char *op, void **out) {
  mbcuda_state *st = mbcuda_st(ctx);
  return scratch_grow(ctx, &st->scratch_f16, &st->scratch_f16_bytes, bytes, op, out);
}

/* ---- graphs ---------------------------------------------------------------------------------- */

extern "C" int mbcuda_graph_begin(mb_ctx *ctx) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (st->capturing) return mb_fail(MB_ERR_INVALID, "cuda: graph_begin: already capturing");
  MBCUDA_CHECK(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal),
               "cudaStreamBeginCapture");
  st->capturing = 1;
  st->n_own_nodes = 0;
  return MB_OK;
}

void mbcuda_note_launch(mb_ctx *ctx) {
  mbcuda_state *st = mbcuda_st(ctx);
  cudaStreamCaptureStatus status;
  const cudaGraphNode_t *deps = NULL;
  size_t n = 0;
  if (cudaStreamGetCaptureInfo(st->stream, &status, NULL, NULL, &deps, NULL, &n) != cudaSuccess ||
      status != cudaStreamCaptureStatusActive || n != 1) {
    (void)cudaGetLastError();
    return; /* not recorded: its edges stay as captured */
  }
  if (st->n_own_nodes == st->cap_own_nodes) {
    const size_t cap = st->cap_own_nodes ? 2 * st->cap_own_nodes : 256;
    cudaGraphNode_t *p = (cudaGraphNode_t *)realloc(st->own_nodes, cap * sizeof *p);
    if (!p) return;
    st->own_nodes = p;
    st->cap_own_nodes = cap;
  }
  st->own_nodes[st->n_own_nodes++] = deps[0];
}

static bool own_node(const mbcuda_state *st, cudaGraphNode_t n) {
  for (size_t i = 0; i < st->n_own_nodes; i++)
    if (st->own_nodes[i] == n) return true;
  return false;
}

static bool kernel_node(cudaGraphNode_t n) {
  cudaGraphNodeType t;
  return cudaGraphNodeGetType(n, &t) == cudaSuccess && t == cudaGraphNodeTypeKernel;
}

/* cuBLAS launches its kernels without programmatic dependent launch, so in a captured step the
 * kernel after one started only once it had ended (CUPTI timeline: lead +0.1 us) and could not
 * load its weights under it. Each edge from another library's kernel into ours becomes a
 * programmatic edge from the launch-completion port: ours may start once every block of theirs
 * has started, and its PDL wait still returns only after their kernel has completed and its
 * writes are visible (the semantics of griddepcontrol.wait), as every kernel of ours waits before
 * it reads what earlier work wrote. The other way (theirs starting under ours) is not allowed:
 * cuBLAS 13's kernels do not wait (tools/device/cublas_pdl_probe.cu: the product read its input
 * before the kernel before it had written it). */
static cudaError_t rewrite_foreign_edges(const mbcuda_state *st, cudaGraph_t g) {
  size_t n = 0;
  cudaError_t e = cudaGraphGetEdges(g, NULL, NULL, NULL, &n);
  if (e != cudaSuccess || n == 0) return e;
  cudaGraphNode_t *from = (cudaGraphNode_t *)malloc(n * sizeof *from);
  cudaGraphNode_t *to = (cudaGraphNode_t *)malloc(n * sizeof *to);
  cudaGraphEdgeData *ed = (cudaGraphEdgeData *)malloc(n * sizeof *ed);
  if (!from || !to || !ed) {
    free(from), free(to), free(ed);
    return cudaErrorMemoryAllocation;
  }
  e = cudaGraphGetEdges(g, from, to, ed, &n);
  for (size_t i = 0; e == cudaSuccess && i < n; i++) {
    if (own_node(st, from[i]) || !own_node(st, to[i]) || !kernel_node(from[i])) continue;
    cudaGraphEdgeData nd = {};
    nd.type = cudaGraphDependencyTypeProgrammatic;
    nd.from_port = cudaGraphKernelNodePortLaunchCompletion;
    e = cudaGraphRemoveDependencies(g, &from[i], &to[i], &ed[i], 1);
    if (e == cudaSuccess) e = cudaGraphAddDependencies(g, &from[i], &to[i], &nd, 1);
  }
  free(from), free(to), free(ed);
  return e;
}

extern "C" int mbcuda_graph_end(mb_ctx *ctx, int *out_graph) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (!st->capturing) return mb_fail(MB_ERR_INVALID, "cuda: graph_end: no capture in progress");
  st->capturing = 0;
  cudaGraph_t g = NULL;
  cudaError_t e = cudaStreamEndCapture(st->stream, &g);
  if (e != cudaSuccess) {
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
    return mb_fail(MB_ERR_DEVICE, "cuda: cudaStreamEndCapture: %s (an op failed during capture?)",
                   cudaGetErrorString(e));
  }
  if (st->graph_edges) {
    e = rewrite_foreign_edges(st, g);
    st->n_own_nodes = 0;
    if (e != cudaSuccess) {
      cudaGraphDestroy(g);
      (void)cudaGetLastError();
      return mb_fail(MB_ERR_DEVICE, "cuda: graph_end: edges out of cuBLAS's kernels: %s",
                     cudaGetErrorString(e));
    }
  }
  int slot = -1;
  for (int i = 0; i < MBCUDA_MAX_GRAPHS; i++)
    if (!st->graphs[i]) { slot = i; break; }
  if (slot < 0) {
    cudaGraphDestroy(g);
    return mb_fail(MB_ERR_OOM, "cuda: graph_end: more than %d live graphs", MBCUDA_MAX_GRAPHS);
  }
  cudaGraphExec_t ex = NULL;
  e = cudaGraphInstantiate(&ex, g, 0);
  cudaGraphDestroy(g);
  MBCUDA_CHECK(e, "cudaGraphInstantiate");
  st->graphs[slot] = ex;
  *out_graph = slot + 1; /* ids start at 1 */
  return MB_OK;
}

static cudaGraphExec_t mbcuda_graph_get(mbcuda_state *st, int graph) {
  if (graph < 1 || graph > MBCUDA_MAX_GRAPHS) return NULL;
  return st->graphs[graph - 1];
}

extern "C" int mbcuda_graph_launch(mb_ctx *ctx, int graph) {
  mbcuda_state *st = mbcuda_st(ctx);
  cudaGraphExec_t ex = mbcuda_graph_get(st, graph);
  if (!ex) return mb_fail(MB_ERR_INVALID, "cuda: graph_launch: unknown graph %d", graph);
  if (st->capturing) return mb_fail(MB_ERR_INVALID, "cuda: graph_launch: a capture is in progress");
  MBCUDA_CHECK(cudaGraphLaunch(ex, st->stream), "cudaGraphLaunch");
  return MB_OK;
}

extern "C" int mbcuda_graph_destroy(mb_ctx *ctx, int graph) {
  mbcuda_state *st = mbcuda_st(ctx);
  cudaGraphExec_t ex = mbcuda_graph_get(st, graph);
  if (!ex) return mb_fail(MB_ERR_INVALID, "cuda: graph_destroy: unknown graph %d", graph);
  MBCUDA_CHECK(cudaStreamSynchronize(st->stream), "graph_destroy (synchronize)");
  MBCUDA_CHECK(cudaGraphExecDestroy(ex), "cudaGraphExecDestroy");
  st->graphs[graph - 1] = NULL;
  if (!mbcuda_live_graphs(st)) { /* no kernel refers to an outgrown scratch buffer any more */
    for (int i = 0; i < st->n_scratch_old; i++)
      MBCUDA_CHECK(cudaFree(st->scratch_old[i]), "graph_destroy (scratch cudaFree)");
    st->n_scratch_old = 0;
  }
  return MB_OK;
}

/* Blocks of func (threads each, smem bytes) that fit an SM at once: the runtime's answer, kept per
 * context so that a decoding step's launches (one a layer) ask the driver once; 0 if it fails.
 * *opted: its entry's opt-in record (NULL when the cache is full: asked each time). */
static int spread_fit(mbcuda_state *st, const void *func, int threads, size_t smem,
                      size_t **opted) {
  const int n = st->spread_fits;
  *opted = NULL;
  for (int i = 0; i < n; i++)
    if (st->spread_fit[i].func == func && st->spread_fit[i].threads == threads &&
        st->spread_fit[i].smem == smem) {
      *opted = &st->spread_fit[i].opted;
      return st->spread_fit[i].fit;
    }
  int fit = 0;
  /* a failed query leaves the launch as asked (and not its error for the launch's check) */
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, func, threads, smem) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (n < (int)(sizeof st->spread_fit / sizeof st->spread_fit[0])) { /* full: asked each time */
    st->spread_fit[n].func = func, st->spread_fit[n].threads = threads;
    st->spread_fit[n].smem = smem, st->spread_fit[n].fit = fit, st->spread_fit[n].opted = 0;
    st->spread_fits = n + 1;
    *opted = &st->spread_fit[n].opted;
  }
  return fit;
}

size_t mbcuda_spread_smem(mb_ctx *ctx, const void *func, int threads, size_t smem, int64_t blocks) {
  mbcuda_state *st = mbcuda_st(ctx);
  const int64_t cap = (blocks + st->sm_count - 1) / st->sm_count;
  size_t *opted;
  if (cap >= spread_fit(st, func, threads, smem, &opted)) return smem;
  /* cap + 1 blocks no longer fit an SM's shared memory */
  const size_t padded = st->smem_per_sm / (size_t)(cap + 1) - st->smem_reserved + 1;
  if (padded <= smem) return smem;
  /* the opt-in is a maximum: once a context has set it this high, a launch need not again */
  if (padded > 48 * 1024 && !(opted && *opted >= padded)) {
    if (cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)padded) !=
        cudaSuccess) {
      (void)cudaGetLastError();
      return smem;
    }
    if (opted) *opted = padded;
  }
  return padded;
}
