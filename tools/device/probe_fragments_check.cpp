// probe_fragments_check.cpp — the tensor-core probes' fragment arithmetic checked on a machine
// without a GPU: ldmatrix.x4 and mma.sync.m16n8k16 emulated on the host (the PTX ISA's fragment
// layouts), fed with the address formulas and the output mappings of probe_common.cuh's
// mma_rows16_x64 and store_acc_t over swizzled 64-wide tiles (batch_gemm_probe.cu's product;
// fused_inproj_probe.cu's x_proj, its slice placed by a tensor copy's 128-byte swizzle) and of
// dtproj_probe.cu (rows padded to 240 bytes), each product compared with a float64 one, every
// ldmatrix phase checked for two rows on one bank group. The formulas are copied from the probes,
// so a change there must be made here too:
//   g++ -O2 -std=c++17 -o /tmp/pfc tools/device/probe_fragments_check.cpp && /tmp/pfc
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

// ldmatrix.x4: lane l gives the element offset of row l % 8 of matrix l / 8; lane L receives from
// matrix i the pair at that matrix's row L / 4, elements 2 (L % 4) and 2 (L % 4) + 1.
static void ldsm4(const float *sm, const int addr[32], float out[32][4][2], int *conflicts) {
  for (int L = 0; L < 32; L++)
    for (int i = 0; i < 4; i++) {
      const int a = addr[8 * i + L / 4];
      out[L][i][0] = sm[a + 2 * (L % 4)];
      out[L][i][1] = sm[a + 2 * (L % 4) + 1];
    }
  // a phase's 8 rows of 16 bytes (8 bf16): their 16-byte slots within 128 bytes must differ
  for (int ph = 0; ph < 4; ph++)
    for (int x = 0; x < 8; x++)
      for (int y = x + 1; y < 8; y++)
        if ((addr[8 * ph + x] / 8) % 8 == (addr[8 * ph + y] / 8) % 8) ++*conflicts;
}

// mma m16n8k16 (row.col): A 16 x 16 from a0..a3, B 16 x 8 from b0, b1; d += A B
static void mma(float d[32][4], float a[32][4][2], const float b[32][4][2], int b0, int b1) {
  float A[16][16], B[16][8];
  for (int L = 0; L < 32; L++) {
    const int g = L / 4, t = L % 4;
    for (int e = 0; e < 2; e++) {
      A[g][2 * t + e] = a[L][0][e];
      A[g + 8][2 * t + e] = a[L][1][e];
      A[g][2 * t + 8 + e] = a[L][2][e];
      A[g + 8][2 * t + 8 + e] = a[L][3][e];
      B[2 * t + e][g] = b[L][b0][e];
      B[2 * t + 8 + e][g] = b[L][b1][e];
    }
  }
  for (int L = 0; L < 32; L++) {
    const int g = L / 4, t = L % 4;
    for (int q = 0; q < 4; q++) {
      const int row = g + 8 * (q / 2), col = 2 * t + q % 2;
      double s = 0;
      for (int k = 0; k < 16; k++) s += (double)A[row][k] * B[k][col];
      d[L][q] += (float)s;
    }
  }
}

static float rnd() { return (float)(rand() % 2001 - 1000) / 1000.f; }

// the largest |got - exact| against exact's largest magnitude; NaN (an element never written)
// counts as a failure
static double rel(const std::vector<double> &exact, const std::vector<float> &got) {
  double d = 0, m = 0;
  for (size_t i = 0; i < exact.size(); i++) {
    d = fmax(d, std::isnan(got[i]) ? 1e30 : fabs(got[i] - exact[i]));
    m = fmax(m, fabs(exact[i]));
  }
  return d / m;
}

// batch_gemm_probe.cu: 64 weight rows x 64 batch rows, K = 256 (4 tiles), 4 warps of 16 rows
static int tile_at(int r, int k) { return r * 64 + ((((k >> 3) ^ r) & 7) << 3) + (k & 7); }
static bool check_batch_probe() {
  const int K = 256, N = 64, M = 64;
  std::vector<float> W(N * K), X(M * K), Wt(N * K), Xt(M * K), Y(M * N, NAN);
  for (auto &v : W) v = rnd();
  for (auto &v : X) v = rnd();
  for (int r = 0; r < 64; r++)
    for (int k = 0; k < K; k++) {
      Wt[(k / 64) * 4096 + tile_at(r, k % 64)] = W[r * K + k];
      Xt[(k / 64) * 4096 + tile_at(r, k % 64)] = X[r * K + k];
    }
  int conflicts = 0;
  for (int warp = 0; warp < 4; warp++) {
    static float acc[8][32][4];
    for (auto &a : acc)
      for (auto &l : a)
        for (auto &q : l) q = 0;
    for (int i = 0; i < K / 64; i++)
      for (int kk = 0; kk < 4; kk++) {
        int addr[32];
        float a[32][4][2], b[32][4][2];
        for (int lane = 0; lane < 32; lane++) {
          const int mi = lane >> 3, mr = lane & 7;
          addr[lane] = tile_at(16 * warp + mr + 8 * (mi & 1), 8 * (2 * kk + (mi >> 1)));
        }
        ldsm4(&Wt[i * 4096], addr, a, &conflicts);
        for (int p = 0; p < 4; p++) {
          for (int lane = 0; lane < 32; lane++) {
            const int mi = lane >> 3, mr = lane & 7;
            addr[lane] = tile_at(16 * p + mr + 8 * (mi >> 1), 8 * (2 * kk + (mi & 1)));
          }
          ldsm4(&Xt[i * 4096], addr, b, &conflicts);
          mma(acc[2 * p], a, b, 0, 1);
          mma(acc[2 * p + 1], a, b, 2, 3);
        }
      }
    for (int lane = 0; lane < 32; lane++) { // y[b][n]: d0, d1 row g, batch 2t, +1; d2, d3 row g + 8
      const int g = lane >> 2, t = lane & 3, n = 16 * warp + g;
      for (int j = 0; j < 8; j++) {
        const int b = 8 * j + 2 * t;
        Y[b * N + n] = acc[j][lane][0];
        Y[(b + 1) * N + n] = acc[j][lane][1];
        Y[b * N + n + 8] = acc[j][lane][2];
        Y[(b + 1) * N + n + 8] = acc[j][lane][3];
      }
    }
  }
  std::vector<double> exact(M * N);
  for (int b = 0; b < M; b++)
    for (int n = 0; n < N; n++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += (double)X[b * K + k] * W[n * K + k];
      exact[b * N + n] = s;
    }
  const double r = rel(exact, Y);
  printf("batch_gemm_probe: 64 x 64 x %d within %.1e of float64, %d bank conflicts: %s\n", K, r,
         conflicts, r < 1e-5 && !conflicts ? "ok" : "FAILED");
  return r < 1e-5 && !conflicts;
}

// dtproj_probe.cu: a 128 x 128 tile, K = 112, rows of 120 elements, 8 warps of 64 x 32
static bool check_dtproj_probe() {
  const int KD = 112, PITCH = 120, OPITCH = 136;
  std::vector<float> X(128 * KD), W(128 * KD), As(128 * PITCH, 0), Bs(128 * PITCH, 0);
  std::vector<float> Os(128 * OPITCH, NAN);
  for (auto &v : X) v = rnd();
  for (auto &v : W) v = rnd();
  for (int r = 0; r < 128; r++)
    for (int k = 0; k < KD; k++) {
      As[r * PITCH + k] = X[r * KD + k];
      Bs[r * PITCH + k] = W[r * KD + k];
    }
  int conflicts = 0;
  for (int warp = 0; warp < 8; warp++) {
    const int wm = 64 * (warp >> 2), wn = 32 * (warp & 3);
    static float acc[4][4][32][4];
    for (auto &x : acc)
      for (auto &y : x)
        for (auto &l : y)
          for (auto &q : l) q = 0;
    for (int kk = 0; kk < KD / 16; kk++) {
      static float a[4][32][4][2], b[2][32][4][2];
      int addr[32];
      for (int i = 0; i < 4; i++) {
        for (int lane = 0; lane < 32; lane++) {
          const int mi = lane >> 3, mr = lane & 7;
          addr[lane] = (wm + 16 * i + mr + 8 * (mi & 1)) * PITCH + 8 * (2 * kk + (mi >> 1));
        }
        ldsm4(As.data(), addr, a[i], &conflicts);
      }
      for (int p = 0; p < 2; p++) {
        for (int lane = 0; lane < 32; lane++) {
          const int mi = lane >> 3, mr = lane & 7;
          addr[lane] = (wn + 16 * p + mr + 8 * (mi >> 1)) * PITCH + 8 * (2 * kk + (mi & 1));
        }
        ldsm4(Bs.data(), addr, b[p], &conflicts);
      }
      for (int i = 0; i < 4; i++)
        for (int p = 0; p < 2; p++) {
          mma(acc[i][2 * p], a[i], b[p], 0, 1);
          mma(acc[i][2 * p + 1], a[i], b[p], 2, 3);
        }
    }
    for (int lane = 0; lane < 32; lane++) {
      const int g = lane >> 2, t = lane & 3;
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
          const int r = wm + 16 * i + g, c = wn + 8 * j + 2 * t;
          Os[r * OPITCH + c] = acc[i][j][lane][0];
          Os[r * OPITCH + c + 1] = acc[i][j][lane][1];
          Os[(r + 8) * OPITCH + c] = acc[i][j][lane][2];
          Os[(r + 8) * OPITCH + c + 1] = acc[i][j][lane][3];
        }
    }
  }
  std::vector<double> exact(128 * 128);
  std::vector<float> got(128 * 128);
  for (int m = 0; m < 128; m++)
    for (int n = 0; n < 128; n++) {
      double s = 0;
      for (int k = 0; k < KD; k++) s += (double)X[m * KD + k] * W[n * KD + k];
      exact[m * 128 + n] = s;
      got[m * 128 + n] = Os[m * OPITCH + n];
    }
  const double r = rel(exact, got);
  printf("dtproj_probe: 128 x 128 x %d within %.1e of float64, %d bank conflicts: %s\n", KD, r,
         conflicts, r < 1e-5 && !conflicts ? "ok" : "FAILED");
  return r < 1e-5 && !conflicts;
}

// fused_inproj_probe.cu's x_proj: P[b][o] = sum_c U[b][c] Wx[o][c] over a CTA's 64 channels, the
// slice (144 rows of 64 bf16) placed as CU_TENSOR_MAP_SWIZZLE_128B places a box 128 bytes wide
// into a 1024-byte aligned destination (the PTX ISA's pattern: byte address bits 4-6 XOR bits 7-9),
// read with the probe's tile_at; u stored at tile_at(b, c); 4 warps taking m-tiles w, w + 4, w + 8
// of the 9; the sums into ps[b][o] with rows PS_LD apart
static bool check_fused_probe() {
  const int XO = 144, TK = 64, MB = 64, PS_LD = XO + 4;
  std::vector<float> Wx(XO * TK), U(MB * TK), Wxs(XO * TK, NAN), Ut(MB * TK, NAN);
  std::vector<float> Ps(MB * PS_LD, NAN);
  for (auto &v : Wx) v = rnd();
  for (auto &v : U) v = rnd();
  for (int o = 0; o < XO; o++)
    for (int c = 0; c < TK; c++) {
      const int byte = o * 128 + 2 * c, sw = byte ^ (((byte >> 7) & 7) << 4);
      Wxs[sw / 2] = Wx[o * TK + c];
    }
  for (int b = 0; b < MB; b++)
    for (int c = 0; c < TK; c++) Ut[tile_at(b, c)] = U[b * TK + c];
  int conflicts = 0, misplaced = 0;
  for (int o = 0; o < XO; o++) // the copy's pattern is the tile_at the kernel reads with
    for (int c = 0; c < TK; c++) misplaced += Wxs[tile_at(o, c)] != Wx[o * TK + c];
  for (int warp = 0; warp < 4; warp++)
    for (int mt = warp; mt < XO / 16; mt += 4) {
      static float d[8][32][4];
      for (auto &x : d)
        for (auto &l : x)
          for (auto &q : l) q = 0;
      for (int kk = 0; kk < TK / 16; kk++) {
        int addr[32];
        float a[32][4][2], b[32][4][2];
        for (int lane = 0; lane < 32; lane++) {
          const int mi = lane >> 3, mr = lane & 7;
          addr[lane] = tile_at(16 * mt + mr + 8 * (mi & 1), 8 * (2 * kk + (mi >> 1)));
        }
        ldsm4(Wxs.data(), addr, a, &conflicts);
        for (int p = 0; p < 4; p++) {
          for (int lane = 0; lane < 32; lane++) {
            const int mi = lane >> 3, mr = lane & 7;
            addr[lane] = tile_at(16 * p + mr + 8 * (mi >> 1), 8 * (2 * kk + (mi & 1)));
          }
          ldsm4(Ut.data(), addr, b, &conflicts);
          mma(d[2 * p], a, b, 0, 1);
          mma(d[2 * p + 1], a, b, 2, 3);
        }
      }
      for (int lane = 0; lane < 32; lane++) {
        const int g = lane >> 2, t = lane & 3, o = 16 * mt + g;
        for (int j = 0; j < 8; j++) {
          const int b = 8 * j + 2 * t;
          Ps[b * PS_LD + o] = d[j][lane][0];
          Ps[(b + 1) * PS_LD + o] = d[j][lane][1];
          Ps[b * PS_LD + o + 8] = d[j][lane][2];
          Ps[(b + 1) * PS_LD + o + 8] = d[j][lane][3];
        }
      }
    }
  std::vector<double> exact(MB * XO);
  std::vector<float> got(MB * XO);
  for (int b = 0; b < MB; b++)
    for (int o = 0; o < XO; o++) {
      double s = 0;
      for (int c = 0; c < TK; c++) s += (double)U[b * TK + c] * Wx[o * TK + c];
      exact[b * XO + o] = s;
      got[b * XO + o] = Ps[b * PS_LD + o];
    }
  const double r = rel(exact, got);
  const bool ok = r < 1e-5 && !conflicts && !misplaced;
  printf("fused_inproj_probe x_proj: %d x %d x %d within %.1e of float64, %d misplaced by the "
         "swizzle, %d bank conflicts: %s\n",
         MB, XO, TK, r, misplaced, conflicts, ok ? "ok" : "FAILED");
  return ok;
}

int main() {
  srand(7);
  const bool a = check_batch_probe(), b = check_dtproj_probe(), c = check_fused_probe();
  return a && b && c ? 0 : 1;
}
