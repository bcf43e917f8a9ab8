// The metadata of one launch: up to kTableCapacity tensors of a bucket, passed to the kernels
// by value (kernel parameter space, up to 32 KiB on sm_70+ since CUDA 12.1), so a launch needs
// no host-to-device copy and can be captured in a CUDA graph as it is. A bucket with more
// tensors is split into several tables, one launch each.
//
// Work is cut into chunks of kChunk elements; chunk c of the bucket is one block's task. The
// chunk numbering is bucket-wide (`first_chunk`), so per-chunk partial sums land in one array
// whatever the number of launches, and every path sums them in the same order.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace swd::cuda {

constexpr int kThreads = 512;          // threads per block, every chunk kernel
constexpr int kWarps = kThreads / 32;
constexpr int kMinBlocksPerSm = 2;     // caps chunk kernels at 64 registers: 1024 threads/SM
constexpr int64_t kChunk = 16384;      // elements per chunk (a multiple of kThreads * 8)
constexpr int kMaxLists = 5;           // e.g. param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
constexpr int kTableCapacity = 224;    // tensors per launch: GPT-2 (148) and ResNet-50 (161)
                                       // buckets fit one table, so adam_step is one launch

struct TensorTable {
  void* lists[kMaxLists][kTableCapacity];  // data pointers; list 0 holds the param dtype
  float* steps[kTableCapacity];            // 0-dim float32 step counts
  double* v_sums[kTableCapacity];          // 0-dim float64 running sums (nullptr: none)
  int64_t numels[kTableCapacity];
  int32_t first_chunk[kTableCapacity + 1]; // bucket-wide index of each tensor's first chunk
  uint8_t vectorized[kTableCapacity];      // every list pointer aligned for 16-byte packs
  int32_t count;                           // tensors in this table
  int32_t first_tensor;                    // bucket-wide index of entry 0
};

// The largest kernel parameter list is a table plus a few hundred bytes of scalars.
static_assert(sizeof(TensorTable) + 512 <= 32764, "TensorTable exceeds kernel parameter space");

struct ChunkLayout {
  std::vector<TensorTable> tables;
  int64_t tensors = 0;
  int32_t chunks = 0;        // chunks of the whole bucket
  double elements = 0.0;     // element count, exact in double up to 2^53

  static int32_t table_chunks(const TensorTable& t) {
    return t.first_chunk[t.count] - t.first_chunk[0];
  }
};

// Tables for `lists` (index i of every list belongs to tensor i; an empty list is skipped and
// its pointers stay null), with the step counts and optional v_sums of every tensor.
ChunkLayout chunk_layout(const std::vector<at::TensorList>& lists, at::TensorList steps,
                       at::TensorList v_sums);

}  // namespace swd::cuda
