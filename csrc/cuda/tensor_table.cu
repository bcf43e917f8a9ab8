#include "cuda/tensor_table.cuh"

#include <cstring>
#include <limits>

#include <c10/util/Exception.h>

namespace swd::cuda {

ChunkLayout chunk_layout(const std::vector<at::TensorList>& lists, at::TensorList steps,
                       at::TensorList v_sums) {
  TORCH_INTERNAL_ASSERT(!lists.empty() && lists.size() <= kMaxLists);
  ChunkLayout layout;
  layout.tensors = static_cast<int64_t>(steps.size());
  int64_t chunk = 0;
  for (int64_t i = 0; i < layout.tensors; ++i) {
    if (i % kTableCapacity == 0) {
      layout.tables.emplace_back();
      TensorTable& fresh = layout.tables.back();
      std::memset(&fresh, 0, sizeof(fresh));
      fresh.first_tensor = static_cast<int32_t>(i);
      fresh.first_chunk[0] = static_cast<int32_t>(chunk);
    }
    TensorTable& table = layout.tables.back();
    const int k = table.count;
    const at::Tensor& reference = lists[0][i];
    const int64_t numel = reference.numel();
    // a pack is 16 bytes of the param dtype; the state lists load the same element count
    const int64_t pack_elements = 16 / reference.element_size();
    bool vectorized = true;
    for (size_t l = 0; l < lists.size(); ++l) {
      if (lists[l].empty()) continue;
      const at::Tensor& tensor = lists[l][i];
      void* pointer = tensor.data_ptr();
      table.lists[l][k] = pointer;
      const auto alignment = static_cast<uintptr_t>(pack_elements * tensor.element_size());
      vectorized = vectorized && reinterpret_cast<uintptr_t>(pointer) % alignment == 0;
    }
    table.steps[k] = steps[i].data_ptr<float>();
    table.v_sums[k] = v_sums.empty() ? nullptr : v_sums[i].data_ptr<double>();
    table.numels[k] = numel;
    table.vectorized[k] = vectorized ? 1 : 0;
    chunk += (numel + kChunk - 1) / kChunk;
    TORCH_CHECK(chunk < std::numeric_limits<int32_t>::max(),
                "swd_native: a bucket of more than 2^31 chunks of ", kChunk,
                " elements is not supported; split the parameters into several param groups");
    table.first_chunk[k + 1] = static_cast<int32_t>(chunk);
    table.count = k + 1;
    layout.elements += static_cast<double>(numel);
  }
  layout.chunks = static_cast<int32_t>(chunk);
  return layout;
}

}  // namespace swd::cuda
