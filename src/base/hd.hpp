// MOAS_HD marks the small arithmetic helpers that the CPU backend and the CUDA kernels share, so the host unit
// tests that call them check the device arithmetic too.
#pragma once

#if defined(__CUDACC__)
#define MOAS_HD __host__ __device__
#else
#define MOAS_HD
#endif
