// scan_staging_check.cpp — the tile scan's staging of whole chunks checked without a GPU: the
// staging functions of csrc/cuda/scan.cu (extracted by tools/scan_staging_check.sh into
// staging.inc) compiled for the host, with a cp_async4 that records each copy, against the copies
// the general paths make (every (state, row) of B and C to pos()'s place, C after B in the rows or
// apart from them; the pair rows' whole path against the predicated loop, a block with channels
// past d among them).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#define __device__
#define __forceinline__ inline
struct Dim { unsigned x; } threadIdx;
static std::map<const float *, const float *> rec; // shared-memory destination -> source
static int dups = 0;
inline void cp_async4(float *dst, const float *src, bool valid) {
  if (rec.count(dst)) dups++;
  rec[dst] = valid ? src : nullptr; // valid false: a zero fill
}
#include "staging.inc"

int main() {
  constexpr int K = 16, NMAX = 16;
  using T = ScanTile<K>;
  static float smem[200000], gB[2000000];
  static uint16_t src[4000000];
  int fails = 0;
  for (int apart = 0; apart < 2; apart++) { // C after B in the rows (the model's x_dbl), or apart
    ScanArgs a{};
    a.len = 700, a.d = 4099, a.n = 16, a.Bm = gB, a.ldb = 2 * 16 + 5, a.ldc = a.ldb;
    a.Cm = apart ? gB + 20 : gB + 16;
    for (int64_t b = 0; b < 2; b++)
      for (int64_t t0 = 0; t0 + 256 <= a.len; t0 += 256) {
        rec.clear(), dups = 0;
        for (unsigned t = 0; t < (unsigned)T::THREADS; t++) {
          threadIdx.x = t;
          scan_stage_bc_whole<NMAX, K>(a, b, t0, smem);
        }
        size_t want = 0;
        for (int s = 0; s < 16; s++)
          for (int tl = 0; tl < 256; tl++, want += 2) {
            const int64_t r = b * a.len + t0 + tl;
            float *db = smem + s * T::ROW + T::pos(tl), *dc = db + NMAX * T::ROW;
            fails += rec[db] != a.Bm + r * a.ldb + s;
            fails += rec[dc] != a.Cm + r * a.ldc + s;
          }
        fails += rec.size() != want || dups;
      }
  }
  for (int blk = 0; blk < 2; blk++) { // a block of real channels, and one with channels past d
    ScanArgs a{};
    a.len = 700, a.d = 4098;
    const int64_t ld = 4100, c0 = 14 * (blk ? 292 : 3);
    std::map<const float *, const float *> got, want;
    for (unsigned t = 0; t < (unsigned)T::THREADS; t++) {
      threadIdx.x = t, rec.clear();
      scan_stage_pairs<K>(a, 0, c0, 256, 256, src, ld, smem);
      got.insert(rec.begin(), rec.end());
    }
    constexpr int P = 7, R = T::THREADS / P; // the predicated loop's copies
    for (unsigned t = 0; t < (unsigned)T::THREADS; t++) {
      const int p = t % P, tl0 = t / P;
      const bool cok = c0 + 2 * p < a.d;
      const uint16_t *q = src + (256 + tl0) * ld + (cok ? c0 + 2 * p : 0);
      float *o = smem + p * T::ROW + T::pos(tl0);
      for (int j = 0; j < 256 / R; j++, q += R * ld)
        want[o + j * (R / K) * T::STRIDE] = cok && tl0 + R * j < 256 ? (const float *)q : nullptr;
    }
    fails += got != want;
  }
  printf("scan staging: %s (%d mismatches)\n", fails ? "FAILED" : "ok", fails);
  return fails != 0;
}
