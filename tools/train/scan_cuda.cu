/*
 * scan_cuda.cu — the selective scan of training (tools/train/train.py) on CUDA: forward and
 * backward in fp32, one thread per (sequence, channel) with the channel's n <= 16 states in
 * registers, time in order (forward) or reversed (backward).
 *
 * Why: train.py's chunked scan in plain PyTorch materialises several (b, l, d_inner, n) tensors
 * per layer and pass; the 24-layer target trained at ~1.6 s a step with it. Here the forward
 * writes the states once (hs, for the backward) and everything else stays in registers.
 *
 * A plain C ABI (raw device pointers, a stream) loaded by ctypes: no PyTorch headers, so nvcc
 * builds it in seconds (train.py does, once, cached by the source's hash). Every tensor is
 * contiguous fp32: u, delta, y, du, ddelta (b, l, d); A (d, n); Bm, Cm (b, l, n); D (d);
 * h0, hlast, dh0 (b, d, n); hs (b, l, d, n), the state after each position.
 * The sums over channels (dB, dC) and over sequences (dA, dD) come back as partials that
 * train.py adds up: dB_part, dC_part (b, l, ceil(d / 32), n) from one warp each, dA_part (b, d, n),
 * dD_part (b, d). train.py --self_test holds all of it to the float64 sequential definition.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#define NMAX 16
#define THREADS 128
#define FULL 0xffffffffu

__device__ __forceinline__ void load_n(const float *p, int n, float (&v)[NMAX]) {
  if (n == NMAX) {
#pragma unroll
    for (int q = 0; q < NMAX / 4; q++) {
      const float4 f = __ldg((const float4 *)p + q);
      v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int s = 0; s < NMAX; s++) v[s] = s < n ? __ldg(p + s) : 0.f;
  }
}

__device__ __forceinline__ void store_n(float *p, int n, const float (&v)[NMAX]) {
  if (n == NMAX) {
#pragma unroll
    for (int q = 0; q < NMAX / 4; q++)
      ((float4 *)p)[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
  } else {
#pragma unroll
    for (int s = 0; s < NMAX; s++)
      if (s < n) p[s] = v[s];
  }
}

__global__ void __launch_bounds__(THREADS)
k_scan_fwd(const float *__restrict__ u, const float *__restrict__ delta, const float *__restrict__ A,
           const float *__restrict__ Bm, const float *__restrict__ Cm, const float *__restrict__ D,
           const float *__restrict__ h0, float *__restrict__ y, float *__restrict__ hlast,
           float *__restrict__ hs, int64_t l, int64_t d, int n) {
  const int64_t b = blockIdx.y, c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= d) return; /* no shuffles here */
  float a[NMAX], h[NMAX];
  load_n(A + c * n, n, a);
  if (h0) {
    load_n(h0 + (b * d + c) * n, n, h);
  } else {
#pragma unroll
    for (int s = 0; s < NMAX; s++) h[s] = 0.f;
  }
  const float Dc = D[c];
#pragma unroll 2
  for (int64_t t = 0; t < l; t++) {
    const int64_t r = b * l + t;
    const float dt = delta[r * d + c], uu = u[r * d + c], du = dt * uu;
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < NMAX; s++) {
      if (s < n) {
        h[s] = fmaf(expf(dt * a[s]), h[s], du * __ldg(Bm + r * n + s));
        acc = fmaf(__ldg(Cm + r * n + s), h[s], acc);
      }
    }
    y[r * d + c] = fmaf(Dc, uu, acc);
    if (hs) store_n(hs + (r * d + c) * n, n, h);
  }
  store_n(hlast + (b * d + c) * n, n, h);
}

/* The 32 values v[0..31] of each lane summed over the warp, lane i keeping the sum of v[i]
 * (a butterfly reduce-scatter: 31 shuffles instead of 32 x 5). */
__device__ __forceinline__ float warp_reduce_scatter(float (&v)[2 * NMAX], int lane) {
#pragma unroll
  for (int st = 0; st < 5; st++) {
    const int m = 16 >> st;
    const bool hi = lane & m;
#pragma unroll
    for (int i = 0; i < 16; i++) {
      if (i < m) {
        const float send = hi ? v[i] : v[i + m], keep = hi ? v[i + m] : v[i];
        v[i] = keep + __shfl_xor_sync(FULL, send, m);
      }
    }
  }
  return v[0];
}

/* Backward, time reversed. With g = dL/dh_t (from y_t and from h_{t+1}) and
 * h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, y_t = C_t . h_t + D u_t:
 *   dh_{t-1} = g exp(delta_t A),  dA += g h_{t-1} exp(delta_t A) delta_t,
 *   ddelta_t = sum_s g (h_{t-1} exp(delta_t A) A + u_t B_t),  du_t = D dy_t + sum_s g delta_t B_t,
 *   dB_t += g delta_t u_t,  dC_t += h_t dy_t,  dD += u_t dy_t. */
__global__ void __launch_bounds__(THREADS)
k_scan_bwd(const float *__restrict__ u, const float *__restrict__ delta, const float *__restrict__ A,
           const float *__restrict__ Bm, const float *__restrict__ Cm, const float *__restrict__ D,
           const float *__restrict__ h0, const float *__restrict__ hs, const float *__restrict__ dy,
           const float *__restrict__ dhlast, float *__restrict__ du_out,
           float *__restrict__ ddelta_out, float *__restrict__ dA_part, float *__restrict__ dB_part,
           float *__restrict__ dC_part, float *__restrict__ dD_part, float *__restrict__ dh0,
           int64_t l, int64_t d, int n) {
  const int64_t b = blockIdx.y, c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31;
  const int64_t G = (d + 31) / 32, grp = c / 32;
  const bool ok = c < d; /* every lane of a warp runs the loop: the shuffles need all 32 */
  const int64_t cc = ok ? c : 0;
  float a[NMAX], dh[NMAX], hcur[NMAX], hprev[NMAX], dA[NMAX];
  load_n(A + cc * n, n, a);
#pragma unroll
  for (int s = 0; s < NMAX; s++) dh[s] = 0.f, dA[s] = 0.f, hcur[s] = 0.f;
  if (ok) {
    if (dhlast) load_n(dhlast + (b * d + c) * n, n, dh);
    load_n(hs + ((b * l + l - 1) * d + c) * n, n, hcur);
  }
  const float Dc = ok ? D[c] : 0.f;
  float dD = 0.f;
  for (int64_t t = l - 1; t >= 0; t--) {
    const int64_t r = b * l + t;
    float dt = 0.f, uu = 0.f, gy = 0.f;
#pragma unroll
    for (int s = 0; s < NMAX; s++) hprev[s] = 0.f;
    if (ok) {
      dt = delta[r * d + c], uu = u[r * d + c], gy = dy[r * d + c];
      if (t > 0) load_n(hs + ((r - 1) * d + c) * n, n, hprev);
      else if (h0) load_n(h0 + (b * d + c) * n, n, hprev);
    }
    float v[2 * NMAX];
    float dd = 0.f, duv = Dc * gy;
#pragma unroll
    for (int s = 0; s < NMAX; s++) {
      v[s] = 0.f, v[NMAX + s] = 0.f;
      if (s < n) {
        const float Bs = __ldg(Bm + r * n + s), Cs = __ldg(Cm + r * n + s);
        const float g = fmaf(Cs, gy, dh[s]);
        const float ea = expf(dt * a[s]);
        const float ghe = g * hprev[s] * ea;
        dd = fmaf(ghe, a[s], fmaf(g * uu, Bs, dd));
        duv = fmaf(g * dt, Bs, duv);
        dA[s] = fmaf(ghe, dt, dA[s]);
        v[s] = g * dt * uu;           /* dB */
        v[NMAX + s] = hcur[s] * gy;   /* dC */
        dh[s] = g * ea;
        hcur[s] = hprev[s];
      }
    }
    dD = fmaf(uu, gy, dD);
    if (ok) {
      ddelta_out[r * d + c] = dd;
      du_out[r * d + c] = duv;
    }
    const float part = warp_reduce_scatter(v, lane);
    if (grp < G) {
      if (lane < NMAX) {
        if (lane < n) dB_part[(r * G + grp) * n + lane] = part;
      } else if (lane - NMAX < n) {
        dC_part[(r * G + grp) * n + lane - NMAX] = part;
      }
    }
  }
  if (ok) {
    store_n(dA_part + (b * d + c) * n, n, dA);
    dD_part[b * d + c] = dD;
    if (dh0) store_n(dh0 + (b * d + c) * n, n, dh);
  }
}

static dim3 grid_of(int64_t b, int64_t d) { return dim3((unsigned)((d + THREADS - 1) / THREADS), (unsigned)b); }

static int bad_shape(int64_t b, int64_t l, int64_t d, int n) {
  return b <= 0 || b > 65535 || l <= 0 || d <= 0 || n <= 0 || n > NMAX;
}

extern "C" int mbt_scan_fwd(const float *u, const float *delta, const float *A, const float *Bm,
                            const float *Cm, const float *D, const float *h0, float *y,
                            float *hlast, float *hs, int64_t b, int64_t l, int64_t d, int n,
                            void *stream) {
  if (bad_shape(b, l, d, n)) return -1;
  k_scan_fwd<<<grid_of(b, d), THREADS, 0, (cudaStream_t)stream>>>(u, delta, A, Bm, Cm, D, h0, y,
                                                                   hlast, hs, l, d, n);
  return (int)cudaGetLastError();
}

extern "C" int mbt_scan_bwd(const float *u, const float *delta, const float *A, const float *Bm,
                            const float *Cm, const float *D, const float *h0, const float *hs,
                            const float *dy, const float *dhlast, float *du, float *ddelta,
                            float *dA_part, float *dB_part, float *dC_part, float *dD_part,
                            float *dh0, int64_t b, int64_t l, int64_t d, int n, void *stream) {
  if (bad_shape(b, l, d, n)) return -1;
  k_scan_bwd<<<grid_of(b, d), THREADS, 0, (cudaStream_t)stream>>>(
      u, delta, A, Bm, Cm, D, h0, hs, dy, dhlast, du, ddelta, dA_part, dB_part, dC_part, dD_part,
      dh0, l, d, n);
  return (int)cudaGetLastError();
}

/* NMAX for train.py: the largest d_state this file handles (else the chunked PyTorch scan). */
extern "C" int mbt_scan_max_state(void) { return NMAX; }
